# an app with no tasks module: autodiscovery skips it

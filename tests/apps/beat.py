"""An app with a beat schedule, for the beat integration tests (broker and prefix from the
environment). ``tick`` counts its runs under ``<prefix>:ticks``."""

from engine import Engine

app = Engine("beat")
app.conf.update(
    beat_lease=2.0,   # a killed leader is replaced within about 3 s
    beat_schedule={
        "every-second": {"task": "tests.apps.beat.tick", "schedule": 1.0, "args": ("s",)},
    },
)


@app.task
def tick(label):
    return app.client.incr(f"{app.conf.key_prefix}:ticks")

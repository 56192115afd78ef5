"""A worker app whose exception type the producer side never imports."""

from engine import Engine

app = Engine("private")


@app.task
def explode():
    class PrivateError(Exception):
        pass
    raise PrivateError("secret")

# the app is made when Django starts (manage.py, the web server), so that
# ``delay_on_commit`` and ``shared_task`` use it
from .engine import app as engine_app

__all__ = ("engine_app",)

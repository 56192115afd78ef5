"""The basic app with ``worker_log_format = "json"`` set on it (tests/integration/test_logs.py)."""

from tests.apps.basic import app

app.conf.worker_log_format = "json"

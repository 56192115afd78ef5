import os

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["shop", "billing", "notes"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("ENGINE_TEST_DJANGO_DB", ":memory:")}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# read by app.config_from_object("django.conf:settings", namespace="ENGINE")
ENGINE_TASK_ROUTES = {"billing.tasks.*": "billing"}
ENGINE_RESULT_EXPIRES = 120
ENGINE_TASK_SOFT_TIME_LIMIT = 30
CELERY_TASK_SOFT_TIME_LIMIT = 99   # another namespace: not read

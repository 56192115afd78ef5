import os

from engine import Engine

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Engine("proj")
# every ENGINE_* name of the Django settings (ENGINE_TASK_ROUTES -> task_routes)
app.config_from_object("django.conf:settings", namespace="ENGINE")
# the tasks module of every INSTALLED_APPS entry, once Django's registry is ready
app.autodiscover_tasks()

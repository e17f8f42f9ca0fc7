"""Settings of the example: no database, no middleware, one task backend -- fcgipool's (docs/django.md)."""

import importlib.util
import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# Django < 6 has no django.tasks: the django-tasks backport is the framework, and it is an app
_BACKPORT = ["django_tasks"] if importlib.util.find_spec("django.tasks") is None else []
INSTALLED_APPS = [*_BACKPORT, "shop.apps.ShopConfig"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "shop.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

TASKS = {
    "default": {
        # SHOP_TASK_BACKEND=django_tasks.backends.immediate.ImmediateBackend: the same views with Django's own
        # backend, which runs the task inside the view (the client waits): what the tests compare against
        "BACKEND": os.environ.get("SHOP_TASK_BACKEND", "fcgipool.contrib.django_tasks.FcgipoolBackend"),
        # "error" (default): enqueue() outside a request raises; "immediate": runs it at once (manage.py shell)
        "OPTIONS": {"OUTSIDE_REQUEST": os.environ.get("SHOP_OUTSIDE_REQUEST", "error")},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}

"""``fcgipool -c pool.conf.py shop.wsgi:application`` (from pool/examples/django_tasks)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
application = get_wsgi_application()

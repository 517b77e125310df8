from django.db.backends.signals import connection_created

from .celery import app as celery_app
from .sqlite import on_connect

# Every SQLite connection compares text in any alphabet's case (mailsetup/sqlite.py).
connection_created.connect(on_connect, dispatch_uid="mailsetup-sqlite")

__all__ = ["celery_app"]

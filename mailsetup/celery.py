import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

from . import broker
from .logs import bind_task, unbind_task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsetup.settings")
# The embedded broker writes each message whole before a worker sees it (broker.py).
broker.install()

app = Celery("mailsetup")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _recycle_database_connections(**_) -> None:
    # With CELERY_DB_REUSE_MAX set, Celery keeps a worker's database connection; this
    # closes it when Django's own rule says so (CONN_MAX_AGE reached, or a failed health
    # check), the rule web requests follow.
    close_old_connections()


# Every line a task logs names the mailbox or outgoing email it works on (LOG_FORMAT=json).
task_prerun.connect(bind_task, dispatch_uid="mailsetup-logs-bind")
task_postrun.connect(unbind_task, dispatch_uid="mailsetup-logs-unbind")

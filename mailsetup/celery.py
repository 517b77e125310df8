import gc
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsetup.settings")

app = Celery("mailsetup")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _freeze_startup_objects(**_) -> None:
    # What a worker process has loaded by now (Django, Celery, the apps) lives as long as
    # the process. Frozen, it is left out of every garbage collection, which otherwise
    # walks it again and again during a sync that allocates millions of objects.
    gc.freeze()

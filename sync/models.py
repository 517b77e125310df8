from django.db import models


class WorkerHeartbeat(models.Model):
    """The last time beat's heartbeat went through the broker and a worker ran it.

    One row; the health page reads it to tell whether scheduled work is flowing.
    """

    name = models.CharField(max_length=50, primary_key=True)
    beat_at = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"

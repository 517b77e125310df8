"""The Prometheus metrics (/metrics), read from the database when Prometheus scrapes.

Why at scrape time and not counted in the processes that do the work: the work happens
in Celery workers, web processes and the listener, on several machines; counters kept in
each would need prometheus-client's multiprocess mode and a shared directory per
machine, and would start again from zero at every restart. The database already holds
every outcome (the sync-run history, each mailbox's sync row, the outgoing emails), so
one collector reads it with a few aggregate queries, bounded by the number of mailboxes
and by the runs of the last hour, never by the number of emails. The sync figures are
therefore gauges over a sliding window (the last hour), not ever-growing counters: the
run history is pruned (SYNC_RUN_HISTORY_DAYS), and a counter read from it would go down.

Nothing here carries a name, an address or a secret: labels are states and outcomes.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from sending.models import OutgoingEmail
from sync.models import Email, SyncRun
from sync.search import vectors_waiting

from . import listener
from .selectors import LAG_LABELS, STATES, classify

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
# Emails waiting for their search vector are counted up to this many (plus one).
SEARCH_WAITING_COUNTED = 100_000
# Upper bounds of the duration histogram, in seconds: an idle run takes a second or
# two, a first download of a large mailbox tens of minutes.
DURATION_BUCKETS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]


class MailsetupCollector:
    """One scrape: each family from one or two aggregate queries."""

    def collect(self):
        rows = classify()
        yield from self._mailboxes(rows)
        account_ids = [row.account.pk for row in rows]
        yield from self._runs(account_ids)
        yield self._emails()
        yield self._search_waiting()
        yield self._outgoing()
        yield from self._queue()
        yield from self._listener()

    def _mailboxes(self, rows):
        counts = {(key, lag): 0 for key in STATES for lag in LAG_LABELS}
        for row in rows:
            counts[(row.key, row.lag_bucket)] += 1
        mailboxes = GaugeMetricFamily(
            "mailsetup_mailboxes",
            "Mailboxes (not removed) by health state and by the time since their last "
            "successful download (lag).",
            labels=["state", "lag"],
        )
        for (key, lag), count in counts.items():
            mailboxes.add_metric([key, lag], count)
        yield mailboxes

    def _runs(self, account_ids):
        since = timezone.now() - WINDOW
        # By each mailbox's (account, started_at) index: one range per mailbox, however
        # long the history of all of them.
        runs = SyncRun.objects.filter(account__in=account_ids, started_at__gte=since)
        outcomes = GaugeMetricFamily(
            "mailsetup_sync_runs_last_hour",
            "Sync runs started in the last hour, by outcome (running: not finished yet).",
            labels=["outcome"],
        )
        by_state = _by_state(runs)
        for state in SyncRun.State.values:
            outcomes.add_metric([state], by_state.get(state, 0))
        yield outcomes

        duration = ExpressionWrapper(F("finished_at") - F("started_at"), DurationField())
        finished = runs.filter(finished_at__isnull=False).annotate(duration=duration)
        aggregates = {
            f"le_{bound}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
            for bound in DURATION_BUCKETS
        }
        figures = finished.aggregate(total=Count("pk"), seconds=Sum("duration"), **aggregates)
        buckets = [(floatToGoString(bound), figures[f"le_{bound}"]) for bound in DURATION_BUCKETS]
        buckets.append(("+Inf", figures["total"]))
        seconds = figures["seconds"].total_seconds() if figures["seconds"] else 0.0
        yield GaugeHistogramMetricFamily(
            "mailsetup_sync_run_duration_seconds",
            "How long the sync runs started in the last hour and finished took.",
            buckets=buckets,
            gsum_value=seconds,
        )

    def _emails(self):
        stored = GaugeMetricFamily(
            "mailsetup_emails_stored",
            "Emails stored, all mailboxes (on PostgreSQL its statistics' estimate, as of "
            "the table's last ANALYZE: an exact count reads every row).",
        )
        stored.add_metric([], emails_stored())
        return stored

    def _search_waiting(self):
        waiting = GaugeMetricFamily(
            "mailsetup_emails_waiting_for_search",
            "Emails stored whose search vector is not filled yet (sync.search.vectors_fill; "
            f"counted up to {SEARCH_WAITING_COUNTED} + 1). Growing for minutes: the fill "
            "task is not running.",
        )
        waiting.add_metric([], vectors_waiting(None, bound=SEARCH_WAITING_COUNTED))
        return waiting

    def _outgoing(self):
        outgoing = GaugeMetricFamily(
            "mailsetup_outgoing_emails",
            "Emails sent from the app, by state (may_have_been_sent: uncertain).",
            labels=["state"],
        )
        by_state = _by_state(OutgoingEmail.objects.all())
        for state in OutgoingEmail.State.values:
            outgoing.add_metric([state], by_state.get(state, 0))
        return outgoing

    def _queue(self):
        lengths = queue_lengths()
        if lengths is None:
            return  # not a Redis broker: nothing to read cheaply
        up = GaugeMetricFamily(
            "mailsetup_celery_broker_up", "Whether the task queue's Redis answered the scrape."
        )
        up.add_metric([], 0 if lengths is False else 1)
        yield up
        if lengths is False:
            return
        depth = GaugeMetricFamily(
            "mailsetup_celery_queue_length",
            "Tasks waiting in the task queue (Redis broker), all priorities.",
            labels=["queue"],
        )
        for name, length in lengths.items():
            depth.add_metric([name], length)
        yield depth

    def _listener(self):
        connections = GaugeMetricFamily(
            "mailsetup_listener_connections",
            "The mail listener's connections, by state.",
            labels=["state"],
        )
        for state, count in sorted(listener.connection_counts().items()):
            connections.add_metric([state], count)
        yield connections
        enabled = GaugeMetricFamily(
            "mailsetup_push_enabled",
            "Whether this deployment runs the mail listener (PUSH_ENABLED); while 0, no "
            "mailbox counts as state=listener (disconnected).",
        )
        enabled.add_metric([], 1 if listener.enabled() else 0)
        yield enabled


def _by_state(rows) -> dict[str, int]:
    grouped = rows.order_by().values("state").annotate(n=Count("pk"))
    return dict(grouped.values_list("state", "n"))


def emails_stored() -> int:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [Email._meta.db_table],
            )
            estimate = cursor.fetchone()[0]
        # -1: never analysed yet (a new installation): small enough to count.
        if estimate >= 0:
            return estimate
    return Email.objects.count()


# kombu's Redis transport keeps each priority of a queue in a list of its own, named
# after the queue, this separator and the priority (0 is the queue's own name).
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = [0, 3, 6, 9]


def queue_lengths() -> dict[str, int] | bool | None:
    """{queue: tasks waiting}; None when the broker is not Redis, False when it did not
    answer (the scrape still answers, saying so)."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    names = [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")]
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        with client:
            pipe = client.pipeline(transaction=False)
            for name in names:
                for step in _PRIORITY_STEPS:
                    pipe.llen(f"{name}{_PRIORITY_SEP}{step}" if step else name)
            counts = pipe.execute()
    except redis.RedisError as error:
        # The type only: the broker's address holds its password.
        logger.warning("The task queue's Redis did not answer: %s", type(error).__name__)
        return False
    steps = len(_PRIORITY_STEPS)
    return {name: sum(counts[i * steps : (i + 1) * steps]) for i, name in enumerate(names)}


registry = CollectorRegistry(auto_describe=False)
registry.register(MailsetupCollector())

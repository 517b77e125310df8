"""Reads of the push listener's state, for the listener itself, the health page and
/metrics."""

from collections.abc import Iterable

from django.utils import timezone

from sync.models import MailboxSync

from .models import MailboxWatch


def watch_counts() -> dict[str, int]:
    """How many mailboxes are in each watch state (every state named, 0 included).
    A row whose listener's lease ran out counts as "stopped": its listener is gone."""
    from django.db.models import Count, Q

    counts = dict.fromkeys(MailboxWatch.State.values, 0)
    now = timezone.now()
    held = Q(holder="") | Q(lease_expires_at__gte=now)
    for row in MailboxWatch.objects.filter(held).values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    counts[MailboxWatch.State.STOPPED] += MailboxWatch.objects.exclude(held).count()
    return counts


def watch_states(account_ids: Iterable[int]) -> dict[int, str]:
    """Each mailbox's watch state; "stopped" for one no listener holds any more (its
    listener died) or that has no row yet."""
    ids = list(account_ids)
    states = dict.fromkeys(ids, MailboxWatch.State.STOPPED.value)
    now = timezone.now()
    rows = MailboxWatch.objects.filter(account_id__in=ids).values_list(
        "account_id", "state", "holder", "lease_expires_at"
    )
    for account_id, state, holder, lease in rows:
        if holder and (lease is None or lease < now):
            continue
        states[account_id] = state
    return states


def mailbox_sync_running(*, account_id: int) -> bool:
    """Whether a run holds the mailbox's claim now: a download queued meanwhile would
    find it taken and end at once, so the listener queues its own after it."""
    return MailboxSync.objects.filter(
        account_id=account_id, claimed_until__gt=timezone.now()
    ).exists()

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


def watches_down(account_ids: Iterable[int]) -> dict[int, str]:
    """{mailbox id: why no listener watches it} for the mailboxes among `account_ids`
    that a listener should watch and does not: its connection broke and it is
    reconnecting, it has been connecting for a while, or its listener stopped (the
    lease ran out, or nobody took it back after a listener shut down). A server that
    cannot be watched, or a mailbox waiting for its owner, is not the listener's news.
    One query, whatever the number of mailboxes."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils.timesince import timesince

    from .services import ELIGIBLE

    now = timezone.now()
    # A listener takes a free mailbox at its next tick: free for longer, none runs.
    grace = timedelta(seconds=settings.PUSH_LEASE_SECONDS + settings.PUSH_TICK_SECONDS)
    State = MailboxWatch.State
    rows = (
        MailboxWatch.objects.filter(ELIGIBLE, account_id__in=list(account_ids))
        .filter(state__in=(State.BACKOFF, State.CONNECTING, State.WATCHING, State.STOPPED))
        .values_list("account_id", "state", "state_since", "holder", "lease_expires_at", "error")
    )
    down = {}
    for account_id, state, since, holder, lease, error in rows:
        if holder and lease is not None and lease < now:
            down[account_id] = (
                f"Its listener stopped renewing its hold {timesince(lease, now)} ago (the "
                "process ended or lost the database); another takes it over shortly."
            )
        elif not holder and state == State.STOPPED and since < now - grace:
            down[account_id] = f"No mail listener has watched it for {timesince(since, now)}."
        elif holder and state == State.BACKOFF:
            down[account_id] = (
                f"The listener lost its connection {timesince(since, now)} ago and is "
                f"reconnecting ({error or 'no answer'})."
            )
        elif holder and state == State.CONNECTING and since < now - grace:
            down[account_id] = f"The listener has been connecting for {timesince(since, now)}."
    return down

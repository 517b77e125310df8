"""Reads of the push listener's state, for the listener itself, the health page and
/metrics. Leases are compared with the database's clock (`Now()`), the one the listeners
write them with, so a web server whose clock drifts does not misread them."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.timesince import timesince

from accounts.models import EmailAccount

from .models import MailboxWatch


def watch_counts() -> dict[str, int]:
    """How many mailboxes are in each watch state (every state named, 0 included).
    A row whose listener's lease ran out counts as "stopped": its listener is gone."""
    from django.db.models import Count

    counts = dict.fromkeys(MailboxWatch.State.values, 0)
    held = Q(holder="") | Q(lease_expires_at__gte=Now())
    for row in MailboxWatch.objects.filter(held).values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    counts[MailboxWatch.State.STOPPED] += MailboxWatch.objects.exclude(held).count()
    return counts


def watch_states(account_ids: Iterable[int]) -> dict[int, str]:
    """Each mailbox's watch state; "stopped" for one no listener holds any more (its
    listener died) or that has no row yet."""
    ids = list(account_ids)
    states = dict.fromkeys(ids, MailboxWatch.State.STOPPED.value)
    left = Q(holder="") | Q(lease_expires_at__gte=Now())
    rows = MailboxWatch.objects.filter(left, account_id__in=ids).values_list("account_id", "state")
    states.update(rows)
    return states


@dataclass(frozen=True)
class WatchNote:
    """What the health page says of a mailbox's watch: `down`, no listener watches it
    though one should (the mailbox reads "Disconnected listener"); else a note beside an
    otherwise healthy mailbox (its server cannot be watched: new mail at the interval)."""

    down: bool
    cause: str


def _eligible_accounts() -> Q:
    """push.services.ELIGIBLE (written from a MailboxWatch) as a filter of EmailAccount:
    the same rule, read from its one definition, for mailboxes that have no watch row."""
    from .services import ELIGIBLE

    def rebase(q: Q) -> Q:
        children = []
        for child in q.children:
            if isinstance(child, Q):
                children.append(rebase(child))
            else:
                lookup, value = child
                if not lookup.startswith("account__"):
                    raise ValueError(f"ELIGIBLE reads {lookup!r}, not the mailbox: rebase it here")
                children.append((lookup.removeprefix("account__"), value))
        return Q(*children, _connector=q.connector, _negated=q.negated)

    return rebase(ELIGIBLE)


def watch_notes(account_ids: Iterable[int]) -> dict[int, WatchNote]:
    """{mailbox id: its note} for the mailboxes among `account_ids` that a listener should
    watch (push.services.ELIGIBLE) and does not, or whose server cannot be watched.

    Down: its connection broke and it is reconnecting; it has been connecting for a
    while; its listener stopped renewing its lease; or no listener took it up within the
    grace period (two leases: a running listener claims free mailboxes every tick), which
    covers a mailbox added while no listener ran (it has no row yet: only a listener
    creates them) and a row left in any state, "needs the owner" included once the owner
    fixed it. A server found unable to be watched is not down until its recheck is due
    (then a listener should have asked it again): it is on the interval, and says so.
    Nothing is down while PUSH_ENABLED is off (a deployment that runs no listener on
    purpose). One query, whatever the number of mailboxes."""
    if not settings.PUSH_ENABLED:
        return {}
    State = MailboxWatch.State
    grace = timedelta(seconds=settings.PUSH_LEASE_SECONDS * 2)
    recheck = timedelta(seconds=settings.PUSH_UNSUPPORTED_RECHECK_SECONDS)
    rows = (
        EmailAccount.objects.filter(_eligible_accounts(), pk__in=list(account_ids))
        .annotate(now=Now())
        .values_list(
            "pk", "created_at", "watch__state", "watch__state_since", "watch__holder",
            "watch__lease_expires_at", "watch__error", "now",
        )
    )  # fmt: skip
    notes = {}
    for account_id, created, state, since, holder, lease, error, now in rows:
        note = None
        if state is None:
            if created < now - grace:
                note = WatchNote(
                    True,
                    f"No mail listener has watched it since it was added "
                    f"{timesince(created, now)} ago.",
                )
        elif holder and lease is not None and lease < now:
            note = WatchNote(
                True,
                f"Its listener stopped renewing its hold {timesince(lease, now)} ago (the "
                "process ended or lost the database); another takes it over shortly.",
            )
        elif holder and state == State.BACKOFF:
            note = WatchNote(
                True,
                f"The listener lost its connection {timesince(since, now)} ago and is "
                f"reconnecting ({error or 'no answer'}).",
            )
        elif holder and state == State.CONNECTING and since < now - grace:
            note = WatchNote(True, f"The listener has been connecting for {timesince(since, now)}.")
        elif not holder and state == State.NOT_SUPPORTED and since >= now - recheck:
            note = WatchNote(
                False,
                "Its server cannot be watched (no IDLE): new mail arrives at the download "
                "interval; the listener asks the server again in "
                f"{timesince(now, since + recheck)}.",
            )
        elif not holder and since < now - grace:
            was = State(state).label.lower()
            note = WatchNote(
                True,
                f"No mail listener has watched it for {timesince(since, now)} (last: {was}).",
            )
        if note is not None:
            notes[account_id] = note
    return notes


def watches_down(account_ids: Iterable[int]) -> dict[int, str]:
    """{mailbox id: why no listener watches it} for the mailboxes among `account_ids`
    that a listener should watch and does not (watch_notes' down ones). One query."""
    return {pk: note.cause for pk, note in watch_notes(account_ids).items() if note.down}

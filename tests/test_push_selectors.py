"""push.selectors: what the health page and /metrics read of the listeners' state."""

from datetime import timedelta

from django.utils import timezone

from push.models import MailboxWatch
from push.selectors import watch_counts, watch_states
from tests.factories import EmailAccountFactory

State = MailboxWatch.State


def _watch(state: str, *, holder: str = "", lease: timedelta | None = None) -> MailboxWatch:
    return MailboxWatch.objects.create(
        account=EmailAccountFactory(), state=state, holder=holder,
        lease_expires_at=timezone.now() + lease if lease is not None else None,
    )  # fmt: skip


def test_it_counts_the_mailboxes_in_each_state(db):
    _watch(State.WATCHING, holder="a", lease=timedelta(minutes=1))
    _watch(State.WATCHING, holder="b", lease=timedelta(minutes=1))
    _watch(State.BACKOFF, holder="a", lease=timedelta(minutes=1))
    _watch(State.NEEDS_OWNER)
    _watch(State.NOT_SUPPORTED)
    # Its listener died: the lease ran out, nobody watches it.
    _watch(State.WATCHING, holder="dead", lease=timedelta(minutes=-1))
    assert watch_counts() == {
        "connecting": 0, "watching": 2, "backoff": 1, "not_supported": 1, "needs_owner": 1,
        "stopped": 1,
    }  # fmt: skip


def test_it_gives_each_mailboxs_state(db):
    live = _watch(State.WATCHING, holder="a", lease=timedelta(minutes=1))
    dead = _watch(State.WATCHING, holder="dead", lease=timedelta(minutes=-1))
    owner = _watch(State.NEEDS_OWNER)
    unwatched = EmailAccountFactory()
    states = watch_states([live.account_id, dead.account_id, owner.account_id, unwatched.pk])
    assert states == {
        live.account_id: "watching", dead.account_id: "stopped",
        owner.account_id: "needs_owner", unwatched.pk: "stopped",
    }  # fmt: skip


def test_it_says_which_mailboxes_no_listener_watches_and_why(db, settings):
    from push.selectors import watches_down

    settings.PUSH_LEASE_SECONDS, settings.PUSH_TICK_SECONDS = 60, 10
    watching = _watch(State.WATCHING, holder="a", lease=timedelta(minutes=1))
    reconnecting = _watch(State.BACKOFF, holder="a", lease=timedelta(minutes=1))
    reconnecting.error = "The connection broke off."
    reconnecting.save()
    dead = _watch(State.WATCHING, holder="dead", lease=timedelta(minutes=-5))
    abandoned = _watch(State.STOPPED)
    MailboxWatch.objects.filter(pk=abandoned.pk).update(
        state_since=timezone.now() - timedelta(minutes=10)
    )
    just_released = _watch(State.STOPPED)  # a listener's next tick takes it
    owner = _watch(State.NEEDS_OWNER)
    unsupported = _watch(State.NOT_SUPPORTED)
    turned_off = _watch(State.STOPPED)
    MailboxWatch.objects.filter(pk=turned_off.pk).update(
        state_since=timezone.now() - timedelta(minutes=10)
    )
    turned_off.account.auto_sync = False
    turned_off.account.save()
    everyone = [w.account_id for w in (watching, reconnecting, dead, abandoned, just_released,
                                        owner, unsupported, turned_off)]  # fmt: skip
    down = watches_down(everyone)
    assert set(down) == {reconnecting.account_id, dead.account_id, abandoned.account_id}
    assert "reconnecting (The connection broke off.)" in down[reconnecting.account_id]
    assert "stopped renewing" in down[dead.account_id]
    assert "No mail listener has watched it for 10" in down[abandoned.account_id]


def test_it_counts_a_mailbox_with_no_row_or_a_row_left_behind_as_down(db, settings):
    """No listener runs: a mailbox added since has no row (only a listener creates one),
    and a row left in any state past the grace period (two leases) is nobody's."""
    from accounts.models import EmailAccount
    from push.selectors import watch_notes, watches_down

    settings.PUSH_LEASE_SECONDS, settings.PUSH_UNSUPPORTED_RECHECK_SECONDS = 60, 3600
    old = timezone.now() - timedelta(minutes=10)
    added_long_ago = EmailAccountFactory()
    EmailAccount.objects.filter(pk=added_long_ago.pk).update(created_at=old)
    added_now = EmailAccountFactory()
    left = {}
    for state in (State.NEEDS_OWNER, State.CONNECTING, State.WATCHING, State.BACKOFF):
        left[state] = _watch(state)
        MailboxWatch.objects.filter(pk=left[state].pk).update(state_since=old)
    unsupported = _watch(State.NOT_SUPPORTED)
    MailboxWatch.objects.filter(pk=unsupported.pk).update(state_since=old)
    recheck_due = _watch(State.NOT_SUPPORTED)
    MailboxWatch.objects.filter(pk=recheck_due.pk).update(
        state_since=timezone.now() - timedelta(hours=2)
    )
    # Waiting for its owner still: not the listener's news.
    waiting = _watch(State.NEEDS_OWNER)
    MailboxWatch.objects.filter(pk=waiting.pk).update(state_since=old)
    EmailAccount.objects.filter(pk=waiting.account_id).update(reconnect_needed_at=old)
    ids = [added_long_ago.pk, added_now.pk, unsupported.account_id, recheck_due.account_id,
           waiting.account_id, *(w.account_id for w in left.values())]  # fmt: skip
    down = watches_down(ids)
    assert set(down) == {
        added_long_ago.pk,
        recheck_due.account_id,
        *(w.account_id for w in left.values()),
    }
    assert "No mail listener has watched it since it was added 10" in down[added_long_ago.pk]
    assert "(last: needs the owner)" in down[left[State.NEEDS_OWNER].account_id]
    # The server without IDLE is on the interval, and says so, until its recheck is due.
    note = watch_notes(ids)[unsupported.account_id]
    assert not note.down and "new mail arrives at the download interval" in note.cause
    # A deployment running no listener on purpose: nobody is down.
    settings.PUSH_ENABLED = False
    assert watches_down(ids) == {} and watch_notes(ids) == {}


def test_it_reads_leases_by_the_databases_clock(db, monkeypatch, settings):
    """The listeners write leases with the database's clock; a web server whose own clock
    runs an hour ahead still reads a live lease as live."""
    from push.selectors import watches_down

    live = _watch(State.WATCHING, holder="a", lease=timedelta(minutes=1))
    ahead = timezone.now() + timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: ahead)
    assert watch_states([live.account_id]) == {live.account_id: "watching"}
    assert watch_counts()["watching"] == 1
    assert watches_down([live.account_id]) == {}

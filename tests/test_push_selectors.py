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

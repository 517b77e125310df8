"""Moving a mailbox between protocols and honouring a server's wait, where a fresh-eyed
review found them wanting: a move only to a card the address is offered, the old
protocol's run and watch let go at the move, a long Retry-After left to the dispatcher
(capped at a day) and said on the page, a To Do due date kept as its day, an address
book that cannot be listed costing the mail nothing. Against the suite's OAuth server
and the EWS and Graph protocol fakes (tests/servers/), which are not Microsoft's
services."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Activity
from providers.models import ProviderDomain
from sync.models import MailboxSync, SyncRun
from sync.selectors import sync_status
from sync.services import MAX_WAIT, heartbeat_record, mailbox_sync
from tests.factories import EmailAccountFactory, EmailProviderFactory
from tests.test_account_move import exchange_by_oauth  # noqa: F401 (a fixture)


def test_it_offers_no_move_to_a_card_the_mailbox_address_is_not_offered(
    client,
    exchange_by_oauth,  # noqa: F811
    graph_provider,
):
    """A card of another organization (mapped to its domain only, not listed for
    everyone) that happens to use Microsoft's common token address is no card this
    mailbox's owner may pick in the wizard: neither may they move the mailbox to it
    (its client registration, its endpoints)."""
    account, _address = exchange_by_oauth
    theirs = EmailProviderFactory(
        name="Othercorp Graph", service_type="graph", auth_method="oauth2", source="user",
        oauth_client_id="othercorp-client", oauth_authorize_url=graph_provider.oauth_authorize_url,
        oauth_token_url=graph_provider.oauth_token_url, imap_host="", smtp_host="",
    )  # fmt: skip
    theirs.set_oauth_client_secret("othercorp-secret")
    theirs.save()
    ProviderDomain.objects.create(domain="othercorp.test", provider=theirs, source="user")
    client.force_login(account.owner)

    started = client.post(reverse("accounts:move", args=[account.pk]), {"provider": theirs.pk})
    assert started.status_code == 404, started.get("Location")
    page = client.get(account.get_absolute_url()).text
    assert "Move to Othercorp Graph" not in page


def test_it_says_why_a_download_asked_for_during_the_servers_wait_has_not_started(db):
    """'Download emails now' pressed while the server's Retry-After holds the mailbox:
    the task asks nothing and is retried after the wait; the status must say so, not
    blame the app's background service."""
    heartbeat_record(hostname="worker-1")  # the workers run
    account = EmailAccountFactory()
    until = timezone.now() + timedelta(minutes=50)
    MailboxSync.objects.update_or_create(
        account=account,
        defaults={
            "not_before": until,
            "download_requested_at": timezone.now() - timedelta(minutes=5),
            "last_error": "Microsoft Graph asked to wait 3600 seconds.",
            "last_error_kind": "busy",
            "failing_since": timezone.now() - timedelta(minutes=10),
        },
    )

    status = sync_status(account)

    assert "background service" not in status["not_started"], status["not_started"]
    assert f"{timezone.localtime(until):%H:%M}" in status["not_started"]


def test_it_leaves_a_long_wait_to_the_dispatcher_capped_at_a_day(
    graph_mailbox, graph_server, monkeypatch
):
    """not_before is capped at MAX_WAIT (a larger Retry-After is the server's mistake).
    A wait longer than a task should be held on a broker (RETRY_WAIT_MAX) asks no retry
    at all: the dispatcher queues the mailbox once the wait is over."""
    from sync.services import mailboxes_due
    from sync.tasks import sync_mailbox

    account, address = graph_mailbox
    graph_server.throttle_next("mailFolders", retry_after=10**7, status=429, mailbox=address)
    asked = []
    monkeypatch.setattr(sync_mailbox, "retry", lambda **kwargs: asked.append(kwargs))

    sync_mailbox.run(account.pk)

    assert asked == []
    state = MailboxSync.objects.get(account=account)
    assert state.not_before <= timezone.now() + timedelta(seconds=MAX_WAIT)
    assert state.not_before > timezone.now() + timedelta(seconds=MAX_WAIT - 60)
    MailboxSync.objects.filter(account=account).update(last_started_at=None)
    assert account.pk not in mailboxes_due()
    MailboxSync.objects.filter(account=account).update(not_before=timezone.now())
    assert account.pk in mailboxes_due()


def test_it_keeps_a_to_do_due_date_as_the_day_it_names(graph_mailbox, graph_server):
    """A To Do due date is a day: 'due 10 December' written with a zone east of UTC
    (midnight in Berlin) is still due 10 December, not 9 December."""
    account, address = graph_mailbox
    account.meetings_import = True
    account.save()
    due = (datetime.now(UTC) + timedelta(days=5)).date()
    ident = graph_server.add_task("Send the contract", mailbox=address)
    graph_server.state.entities[ident].data["dueDateTime"] = {
        "dateTime": f"{due.isoformat()}T00:00:00.0000000",
        "timeZone": "Europe/Berlin",
    }

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    task = Activity.objects.get(account=account, kind="task")
    assert task.due_on == due


def test_it_stops_the_old_protocols_run_when_the_mailbox_moves(
    exchange_by_oauth,  # noqa: F811
    graph_server,
    graph_provider,
    oauth_server,
):
    """A download over EWS holds the mailbox while its owner moves it to Graph: the move
    forgets the folders' EWS states and locations in its transaction, and the EWS run
    must not go on writing them afterwards (nor keep the claim that makes the move's
    own download give way): its next renewal finds the claim gone."""
    from accounts.services import account_reconnect
    from sync.services import ClaimLost, _claim, _renew
    from tests.conftest import GRAPH_SCOPES

    account, address = exchange_by_oauth
    graph_server.add_user(address, name="Erin Exchange")
    token, _left = _claim(account.pk)  # the EWS run, under way
    assert token is not None

    account_reconnect(
        account=account, actor=account.owner, provider=graph_provider,
        oauth=oauth_server.grant(address, "mailsetup-test", scope=GRAPH_SCOPES),
    )  # fmt: skip

    account.refresh_from_db()
    assert account.provider == graph_provider
    with pytest.raises(ClaimLost):
        _renew(account.pk, token)


def test_it_downloads_mail_when_the_address_book_cannot_be_listed(graph_mailbox, graph_server):
    """The address book's folders are listed with the mail folders on every run, even
    with contacts import off: a refusal of that one listing (403 on contactFolders)
    must not stop the mail (one quirk never blocks another)."""
    from sync.models import Email
    from tests.mailbox import make_message

    account, address = graph_mailbox
    assert account.contacts_import == "off"
    raw = make_message(subject="Offer", to=address, age=timedelta(hours=1))
    graph_server.add_message("inbox", raw, mailbox=address)
    graph_server.fail_next("contactFolders", 403, "ErrorAccessDenied", mailbox=address, count=5)

    run = mailbox_sync(account_id=account.pk)

    state = MailboxSync.objects.get(account=account)
    assert state.health == MailboxSync.Health.OK, (state.last_error_kind, state.last_error)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account, subject="Offer").exists()


def test_it_gives_up_the_old_protocols_watch_when_the_mailbox_moves(
    exchange_by_oauth,  # noqa: F811
    graph_server,
    graph_provider,
    oauth_server,
):
    """The listener watching the mailbox over EWS loses the lease at the move: its next
    renewal no longer holds it (it closes the old connection), and any listener may
    claim it afresh with the new protocol's watcher (Graph's: none, so the interval)."""
    from accounts.services import account_reconnect
    from push import services as push
    from push.models import MailboxWatch
    from tests.conftest import GRAPH_SCOPES

    account, address = exchange_by_oauth
    graph_server.add_user(address, name="Erin Exchange")
    MailboxWatch.objects.create(
        account=account, holder="listener-1", state=MailboxWatch.State.WATCHING,
        lease_expires_at=timezone.now() + timedelta(minutes=2),
    )  # fmt: skip
    assert account.pk in push.watches_renew(holder="listener-1")

    account_reconnect(
        account=account, actor=account.owner, provider=graph_provider,
        oauth=oauth_server.grant(address, "mailsetup-test", scope=GRAPH_SCOPES),
    )  # fmt: skip

    assert account.pk not in push.watches_renew(holder="listener-1")
    watch = MailboxWatch.objects.get(account=account)
    assert (watch.holder, watch.state) == ("", MailboxWatch.State.STOPPED)


def test_it_shows_the_next_download_no_sooner_than_the_server_allows(db):
    account = EmailAccountFactory()
    until = timezone.now() + timedelta(minutes=50)
    MailboxSync.objects.update_or_create(
        account=account,
        defaults={"not_before": until, "last_started_at": timezone.now() - timedelta(minutes=1)},
    )

    assert sync_status(account)["next_due"] == until

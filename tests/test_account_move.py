"""Moving a mailbox to another protocol of the same sign-in: an Exchange mailbox of a
Microsoft 365 tenant moves to Microsoft Graph (EWS is off for Microsoft 365 from April
2027) by signing in again, keeping its settings and emails, none stored twice. Against
the suite's OAuth server, the EWS protocol fake (tests/servers/ews.py) and the Graph
protocol fake (tests/servers/graph.py): neither is Microsoft's service."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from accounts.models import AccountChange
from sync.models import Email, EmailLocation, Folder, SyncRun
from sync.services import mailbox_sync
from tests.factories import EmailProviderFactory, UserFactory
from tests.mailbox import make_message
from tests.servers.oauth import authorize_as

CALLBACK = reverse("accounts:oauth_callback")


@pytest.fixture
def exchange_by_oauth(exchange_mailbox, ews_server, graph_provider, oauth_server):
    """An Exchange mailbox of the Microsoft 365 tenant that the Graph card signs in to
    (the same authorization and token addresses), signed in with a token, with two
    emails downloaded over EWS; the same messages are in its Graph mailbox."""
    from accounts.oauth import tokens_store

    account, address = exchange_mailbox
    card = account.provider
    card.auth_method = "oauth2"
    card.oauth_client_id = graph_provider.oauth_client_id
    card.oauth_tenant = graph_provider.oauth_tenant
    card.oauth_authorize_url = graph_provider.oauth_authorize_url
    card.oauth_token_url = graph_provider.oauth_token_url
    card.security_guide = "outlook"
    card.set_oauth_client_secret("client-secret-1")
    card.save()
    ews_server.state.users[address].password = None
    account.set_password("")
    account.display_name, account.sync_period = "Sales desk", "1m"
    account.save()
    tokens_store(account=account, answer=oauth_server.grant(address, "mailsetup-test"))
    return account, address


def _both(ews_server, graph_server, address, subject, folder="inbox"):
    raw = make_message(subject=subject, to=address, age=timedelta(hours=2))
    ews_server.add_message(folder, raw, received=datetime.now(UTC), mailbox=address)
    graph_server.add_message(folder, raw, mailbox=address)


def _move(client, account, card, ca_file):
    started = client.post(reverse("accounts:move", args=[account.pk]), {"provider": card.pk})
    assert started.status_code == 302, started
    assert started.url.startswith(card.oauth_authorize_url)
    return client.get(CALLBACK, authorize_as(started.url, ca_file), follow=True)


def test_it_moves_an_exchange_mailbox_to_graph_keeping_its_emails_once(
    client, exchange_by_oauth, ews_server, graph_server, graph_provider, mail_trust
):
    account, address = exchange_by_oauth
    graph_server.add_user(address, name="Erin Exchange")
    _both(ews_server, graph_server, address, "Offer")
    _both(ews_server, graph_server, address, "Invoice")
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    emails = set(Email.objects.filter(account=account).values_list("pk", flat=True))
    assert len(emails) == 2
    client.force_login(account.owner)
    page = client.get(account.get_absolute_url()).text
    assert "Move to Microsoft 365 Graph" in page

    response = _move(client, account, graph_provider, str(mail_trust))

    assert response.redirect_chain[-1][0] == account.get_absolute_url()
    assert "now connects through Microsoft 365 Graph" in response.text
    account.refresh_from_db()
    assert account.provider == graph_provider
    assert (account.display_name, account.sync_period) == ("Sales desk", "1m")
    change = AccountChange.objects.get(account=account, field="provider")
    assert change.new_value == "Microsoft 365 Graph"
    # The Exchange locations are forgotten at once; the emails stay.
    assert not EmailLocation.objects.filter(email__account=account).exists()
    assert set(Email.objects.filter(account=account).values_list("pk", flat=True)) == emails

    _both(ews_server, graph_server, address, "After the move")
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED

    stored = Email.objects.filter(account=account)
    assert sorted(stored.values_list("subject", flat=True)) == [
        "After the move",
        "Invoice",
        "Offer",
    ]
    assert emails <= set(stored.values_list("pk", flat=True))
    inbox = Folder.objects.get(account=account, path="Inbox")
    assert inbox.server_id == graph_server.folder_id("inbox", address) and inbox.sync_state
    assert EmailLocation.objects.filter(folder=inbox).count() == 3


def test_it_offers_a_move_only_to_cards_of_the_same_sign_in(
    client, exchange_by_oauth, graph_provider
):
    account, _address = exchange_by_oauth
    elsewhere = EmailProviderFactory(
        name="Other Graph", service_type="graph", auth_method="oauth2",
        oauth_client_id="x", oauth_authorize_url="https://login.other.test/authorize",
        oauth_token_url="https://login.other.test/token", imap_host="", smtp_host="",
    )  # fmt: skip
    elsewhere.set_oauth_client_secret("s")
    elsewhere.save()
    client.force_login(account.owner)

    page = client.get(account.get_absolute_url()).text
    assert "Move to Microsoft 365 Graph" in page and "Move to Other Graph" not in page
    url = reverse("accounts:move", args=[account.pk])
    assert client.post(url, {"provider": elsewhere.pk}).status_code == 404
    assert client.post(url, {"provider": account.provider.pk}).status_code == 404
    assert client.post(url, {"provider": "x"}).status_code == 404
    # Nobody else may move it.
    client.force_login(UserFactory())
    assert client.post(url, {"provider": graph_provider.pk}).status_code == 404
    account.refresh_from_db()
    assert account.provider != graph_provider


def test_it_keeps_the_mailbox_where_it_was_when_graph_refuses_the_sign_in(
    client, exchange_by_oauth, graph_server, graph_provider, mail_trust
):
    account, _address = exchange_by_oauth  # no Graph mailbox for this address
    card = account.provider
    client.force_login(account.owner)

    response = _move(client, account, graph_provider, str(mail_trust))

    account.refresh_from_db()
    assert account.provider == card
    assert response.redirect_chain[-1][0] == account.get_absolute_url()
    assert not AccountChange.objects.filter(account=account, field="provider").exists()


def test_it_offers_graph_beside_the_card_of_the_same_sign_in_in_the_wizard(
    client, exchange_by_oauth, graph_provider
):
    account, _address = exchange_by_oauth
    client.force_login(UserFactory())
    url = reverse("accounts:wizard_sign_in")
    page = client.get(url, {"address": "new@corp.test", "provider": account.provider.pk}).text
    assert "The same account also connects through" in page
    assert f"provider={graph_provider.pk}" in page


def test_it_ships_a_graph_card_beside_the_microsoft_365_one(db):
    from accounts.selectors import same_sign_in_elsewhere
    from providers.models import EmailProvider, ServiceType
    from providers.services import provider_load_builtins

    provider_load_builtins()
    imap = EmailProvider.objects.get(name="Microsoft 365")
    graph = EmailProvider.objects.get(name="Microsoft 365 (Graph)")
    assert graph.service_type == ServiceType.GRAPH
    # Microsoft's addresses come with the cards (providers 0009 fills the ones 0002 made).
    microsoft = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert graph.oauth_token_url == imap.oauth_token_url == microsoft
    # Offered once an administrator enters the app registration on both cards.
    assert same_sign_in_elsewhere(imap, "contoso.onmicrosoft.com") == []
    for card in (imap, graph):
        card.oauth_client_id = "company-app"
        card.set_oauth_client_secret("secret")
        card.save()
    assert same_sign_in_elsewhere(imap, "contoso.onmicrosoft.com") == [graph]
    assert same_sign_in_elsewhere(graph, "contoso.onmicrosoft.com") == [imap]

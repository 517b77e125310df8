"""Adding an Exchange (EWS) mailbox with the wizard: the password is checked for real
against the suite's EWS protocol fake (tests/servers/ews.py, not Exchange itself)."""

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from accounts.models import EmailAccount
from tests.factories import UserFactory


def _sign_in_url(provider, address: str) -> str:
    query = urlencode({"address": address, "provider": provider.pk})
    return f"{reverse('accounts:wizard_sign_in')}?{query}"


def test_it_adds_an_exchange_mailbox_after_signing_in(client, exchange_provider, ews_server):
    ews_server.add_user("dora@corp.test", "dora-secret", name="Dora Director")
    user = UserFactory()
    client.force_login(user)
    url = _sign_in_url(exchange_provider, "dora@corp.test")
    page = client.get(url).text
    assert f"Signing in checks Exchange (EWS) at {ews_server.ews_url}" in page

    response = client.post(url, {"password": "dora-secret"})

    assert response.status_code == 302, response.text
    account = EmailAccount.objects.get(owner=user, address="dora@corp.test")
    assert account.get_password() == "dora-secret"
    assert ews_server.calls("GetFolder") >= 1
    # Its display name comes from the Exchange directory (ResolveNames).
    assert account.display_name == "Dora Director"
    assert ews_server.calls("ResolveNames") == 1


def test_it_names_the_problem_when_exchange_refuses_the_password(
    client, exchange_provider, ews_server
):
    ews_server.add_user("dan@corp.test", "dan-secret")
    client.force_login(UserFactory())

    response = client.post(_sign_in_url(exchange_provider, "dan@corp.test"), {"password": "nope"})

    assert response.status_code == 200
    assert "Exchange did not accept the login and password" in response.text
    assert "nope" not in response.text
    assert not EmailAccount.objects.exists()


def test_it_finds_the_service_by_autodiscover_when_the_card_has_none(
    client, exchange_provider, ews_server, tmp_path, monkeypatch
):
    # exchangelib's autodiscover asks https://<domain>/ and autodiscover.<domain> on port
    # 443 through DNS, none of which the tests have; it first tries the endpoint it keeps
    # for the domain in its cache, so the fake's autodiscover endpoint is put there. The
    # answer (GetUserSettings) then comes from the fake, as from a real server.
    from exchangelib import BASIC, Configuration, Credentials
    from exchangelib.autodiscover import cache, clear_cache
    from exchangelib.autodiscover.protocol import AutodiscoverProtocol

    from mail.ews.session import _exchangelib

    _exchangelib()  # the app's TLS trust for exchangelib's requests
    monkeypatch.setattr(cache, "AUTODISCOVER_PERSISTENT_STORAGE", tmp_path / "ad-cache")
    exchange_provider.exchange_url = ""
    exchange_provider.save()
    ews_server.add_user("auto@corp.test", "auto-secret")
    credentials = Credentials("auto@corp.test", "auto-secret")
    config = Configuration(
        service_endpoint=ews_server.autodiscover_url, credentials=credentials, auth_type=BASIC
    )
    cache.autodiscover_cache[("corp.test", credentials)] = AutodiscoverProtocol(config=config)
    client.force_login(UserFactory())
    try:
        page = client.get(_sign_in_url(exchange_provider, "auto@corp.test")).text
        assert "the address autodiscover finds for corp.test" in page
        ews_server.state.requests.clear()

        response = client.post(
            _sign_in_url(exchange_provider, "auto@corp.test"), {"password": "auto-secret"}
        )
    finally:
        clear_cache()

    assert response.status_code == 302, response.text
    assert EmailAccount.objects.filter(address="auto@corp.test").exists()
    assert ews_server.calls("GetUserSettings") == 1 and ews_server.calls("GetFolder") >= 1


def test_it_refuses_an_internal_exchange_server_even_when_dns_said_otherwise(
    client, exchange_provider, ews_server, monkeypatch
):
    from mail.ews import session as exchange
    from systemsettings.models import SystemSetting

    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
    # The first lookup (the app's own check) says "public"; the connection then lands on
    # loopback, as with DNS rebinding. The check on the connected socket stops it.
    monkeypatch.setattr(exchange.net, "resolve", lambda *args: [("93.184.215.14", 443)])
    ews_server.add_user("ivy@corp.test", "ivy-secret")
    client.force_login(UserFactory())
    ews_server.state.requests.clear()

    response = client.post(
        _sign_in_url(exchange_provider, "ivy@corp.test"), {"password": "ivy-secret"}
    )

    assert response.status_code == 200
    assert "The Exchange server is on an internal network address" in response.text
    assert ews_server.requests == []  # no request, so no credentials, reached it
    assert not EmailAccount.objects.exists()


def test_it_gives_up_on_an_autodiscover_that_answers_a_byte_at_a_time(
    client, exchange_provider, ews_server, tmp_path, monkeypatch, settings
):
    # The cached autodiscover endpoint (as in the test above) answers its status line a
    # byte every 0.2 s for a minute: no read ever waits past the 1 s timeout, so only a
    # deadline over the whole walk ends it. The abandoned walk must end too: it holds
    # exchangelib's process-wide autodiscover lock, which the next sign-in waits on.
    import threading
    import time

    from exchangelib import BASIC, Configuration, Credentials
    from exchangelib.autodiscover import cache, clear_cache
    from exchangelib.autodiscover.protocol import AutodiscoverProtocol

    from mail.ews.session import AUTODISCOVER_CONNECTS, _exchangelib

    settings.MAIL_CONNECT_TIMEOUT = 1
    _exchangelib()
    monkeypatch.setattr(cache, "AUTODISCOVER_PERSISTENT_STORAGE", tmp_path / "ad-cache")
    exchange_provider.exchange_url = ""
    exchange_provider.save()
    ews_server.add_user("slow@corp.test", "slow-secret")
    credentials = Credentials("slow@corp.test", "slow-secret")

    def cached_endpoint():
        config = Configuration(
            service_endpoint=ews_server.autodiscover_url, credentials=credentials, auth_type=BASIC
        )
        cache.autodiscover_cache[("corp.test", credentials)] = AutodiscoverProtocol(config=config)

    cached_endpoint()
    ews_server.state.drips["GetUserSettings"] = 0.2
    client.force_login(UserFactory())
    url = _sign_in_url(exchange_provider, "slow@corp.test")
    try:
        began = time.monotonic()
        response = client.post(url, {"password": "slow-secret"})
        took = time.monotonic() - began

        # The thread's connection was cut: the server sees its answer's end.
        for _ in range(50):
            walks = [t for t in threading.enumerate() if t.name == "ews-autodiscover"]
            if not walks and ews_server.state.dripping == 0:
                break
            time.sleep(0.1)
        ended = (walks, ews_server.state.dripping)

        del ews_server.state.drips["GetUserSettings"]
        cached_endpoint()  # the failed walk dropped the endpoint from the cache
        again = client.post(url, {"password": "slow-secret"})
    finally:
        clear_cache()

    assert response.status_code == 200
    assert (
        f"Exchange autodiscover for corp.test did not finish within {AUTODISCOVER_CONNECTS} "
        "seconds" in response.text
    )
    assert AUTODISCOVER_CONNECTS <= took < 30  # the drip alone lasts a minute
    assert ended == ([], 0)
    assert again.status_code == 302, again.text
    assert EmailAccount.objects.filter(address="slow@corp.test").exists()


def _healthy_cache_entry(ews_server, tmp_path, monkeypatch, address: str, password: str):
    from exchangelib import BASIC, Configuration, Credentials
    from exchangelib.autodiscover import cache
    from exchangelib.autodiscover.protocol import AutodiscoverProtocol

    monkeypatch.setattr(cache, "AUTODISCOVER_PERSISTENT_STORAGE", tmp_path / "ad-cache")
    ews_server.add_user(address, password)
    credentials = Credentials(address, password)
    config = Configuration(
        service_endpoint=ews_server.autodiscover_url, credentials=credentials, auth_type=BASIC
    )
    key = (address.partition("@")[2], credentials)
    cache.autodiscover_cache[key] = AutodiscoverProtocol(config=config)
    return cache.autodiscover_cache, key, credentials


def test_it_keeps_the_cached_endpoint_when_a_walk_out_of_time_gets_its_turn(
    exchange_provider, ews_server, tmp_path, monkeypatch
):
    # A walk that waited behind another for exchangelib's lock, and whose time ran out
    # meanwhile, asked the cached endpoint with its connections refused, took that for
    # the endpoint's failure and forgot it, for every process of the host.
    from exchangelib.autodiscover import clear_cache

    from mail import trust
    from mail.ews.session import AutodiscoverCancelled, _exchangelib

    ex = _exchangelib()
    entries, key, credentials = _healthy_cache_entry(
        ews_server, tmp_path, monkeypatch, "late@corp.test", "late-secret"
    )
    scope = trust.Cancellable(allow_internal=True)
    scope.cancel()
    asked = ews_server.calls("GetUserSettings")
    try:
        with trust.connections_of(scope), pytest.raises(AutodiscoverCancelled):
            ex.Account(
                primary_smtp_address="late@corp.test", credentials=credentials,
                autodiscover=True, access_type=ex.DELEGATE,
            )  # fmt: skip
        assert key in entries
        assert ews_server.calls("GetUserSettings") == asked
        account = ex.Account(
            primary_smtp_address="late@corp.test", credentials=credentials,
            autodiscover=True, access_type=ex.DELEGATE,
        )  # fmt: skip
        assert account.protocol.service_endpoint.lower() == ews_server.ews_url.lower()
    finally:
        clear_cache()


def test_it_asks_dns_nothing_once_the_walk_is_out_of_time(monkeypatch):
    import dns.resolver
    from exchangelib.errors import TransportError

    from mail import trust
    from mail.ews.session import _autodiscovery, _exchangelib

    _exchangelib()
    asked = []
    monkeypatch.setattr(
        dns.resolver.Resolver, "resolve", lambda *args, **kw: asked.append(args) or []
    )
    walk = _autodiscovery()(email="dns@corp.test")
    scope = trust.Cancellable(allow_internal=True)
    scope.cancel()
    with trust.connections_of(scope):
        with pytest.raises(TransportError):
            walk._ensure_valid_hostname("https://corp.test/autodiscover/autodiscover.svc")
        assert walk._get_srv_records("_autodiscover._tcp.corp.test") == []
    assert asked == []
    walk._get_srv_records("_autodiscover._tcp.corp.test")  # outside a scope: asked
    assert len(asked) == 1

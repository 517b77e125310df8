import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.factories import UserFactory

pytest_plugins = ["tests.browser", "tests.push_servers"]

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _redis_of_this_worker() -> None:
    """Under pytest-xdist each worker has its own test database (pytest-django) and its
    own Redis database, two below the last's (15, 13, ...; 14 is the benchmarks' broker,
    bench/README.md): a Celery test empties its broker, and two workers on one database
    would also take each other's tasks."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    from urllib.parse import urlsplit, urlunsplit

    url = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    base = int(url.path.strip("/") or 0)
    path = f"/{(base - 2 * int(worker[2:])) % 16}"
    os.environ["TEST_REDIS_URL"] = urlunsplit(url._replace(path=path))


_redis_of_this_worker()
SHARED_DIR = Path(os.environ.get("MAILSETUP_SHARED_DIR") or PROJECT_DIR.parent / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"The shared test data folder {SHARED_DIR} is missing (see README).")
    return SHARED_DIR


@pytest.fixture
def ispdb_dir(shared_dir) -> Path:
    return shared_dir / "ispdb"


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def builtin_providers(db):
    from providers.services import provider_load_builtins

    return provider_load_builtins()


@pytest.fixture(autouse=True)
def _fresh_system_settings():
    # Each process keeps the system settings it read for a few seconds; a test's
    # rolled-back rows must not leak into the next test through that.
    from systemsettings.selectors import cache_clear

    cache_clear()
    yield
    cache_clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The real hasher spends about half a second per user created, and the sharing
    # matrix alone creates thousands; no test is about the hash's strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_network_discovery(settings):
    # Discovery's network steps would leave the machine; tests that exercise them
    # build their own Discoverer against loopback servers.
    settings.DISCOVERY_USE_ISPDB = False
    settings.DISCOVERY_USE_AUTOCONFIG = False
    settings.DISCOVERY_USE_MX = False
    settings.DISCOVERY_USE_AUTODISCOVER = False


SYNC_POOL = 300
_sync_pool = itertools.count()

MAIL_USERS = {
    "alice@example.test": "alice-secret",
    "bob@example.test": "bob-secret",
    "refused@example.test": "refused-secret",
    "carol@elsewhere.test": "carol-secret",
}


@pytest.fixture(scope="session")
def dovecot(oauth_server):
    from tests.servers.dovecot import Dovecot, DovecotUser

    users = [DovecotUser(name, password) for name, password in MAIL_USERS.items()]
    # A pool of empty mailboxes for sync tests: one each, never shared.
    users += [DovecotUser(f"sync-{n:03}@example.test", "sync-secret") for n in range(SYNC_POOL)]
    # Dovecot's passwd-file takes no spaces in extra fields, hence the underscores.
    users.append(
        DovecotUser("noimap@example.test", "noimap-secret", "nologin reason=IMAP_is_disabled")
    )
    # Not under pytest's temp folder: Dovecot's processes run as nobody, and pytest's
    # folders are private to root.
    root = Path(tempfile.mkdtemp(prefix="mailsetup-dovecot-"))
    server = Dovecot(
        root=root, users=users, oauth_introspection_url=oauth_server.introspection_url
    ).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def smtp_servers(oauth_server):
    from tests.servers.smtp import SmtpServer

    # The pooled mailboxes send too (the sending tests).
    users = MAIL_USERS | {f"sync-{n:03}@example.test": "sync-secret" for n in range(SYNC_POOL)}
    servers = {
        "starttls": SmtpServer(users=users),
        "implicit": SmtpServer(users=users, implicit_tls=True),
        "no_auth": SmtpServer(users={}, auth=False),
    }
    for server in servers.values():
        server.handler.refused_senders.add("refused@example.test")
        server.handler.token_check = lambda user, token: oauth_server.token_user(token) == user
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def mail_trust(settings, tmp_path, db):
    """Trust the test CA like a company CA, and allow loopback mail servers."""
    from systemsettings.models import SystemSetting
    from tests.servers.certs import test_ca

    ca_file = tmp_path / "test-ca.pem"
    test_ca().cert_pem.write_to_path(str(ca_file))
    settings.MAIL_EXTRA_CA_FILE = str(ca_file)
    settings.MAIL_CONNECT_TIMEOUT = 3
    # update_or_create: transactional tests (live_server) flush the migrations' rows.
    SystemSetting.objects.update_or_create(
        code="AllowInternalMailServers", defaults={"value_type": "boolean", "value": "yes"}
    )
    return ca_file


@pytest.fixture
def test_provider(db, dovecot, smtp_servers, mail_trust):
    """A provider whose servers are the suite's Dovecot and aiosmtpd."""
    from tests.factories import EmailProviderFactory, ProviderDomainFactory

    provider = EmailProviderFactory(
        name="Test Mail",
        imap_host="localhost",
        imap_port=dovecot.imaps_port,
        imap_security="ssl",
        smtp_host="localhost",
        smtp_port=smtp_servers["starttls"].port,
        smtp_security="starttls",
    )
    ProviderDomainFactory(domain="example.test", provider=provider)
    return provider


@pytest.fixture
def synced_mailbox(db, dovecot, test_provider):
    """A fresh Dovecot user and its EmailAccount: (account, mailbox)."""
    from tests.factories import EmailAccountFactory
    from tests.mailbox import Mailbox

    number = next(_sync_pool)
    assert number < SYNC_POOL, "raise SYNC_POOL: the sync tests used every pooled mailbox"
    address = f"sync-{number:03}@example.test"
    account = EmailAccountFactory(
        provider=test_provider, address=address, login=address, password="sync-secret"
    )
    return account, Mailbox(dovecot, address, "sync-secret")


@pytest.fixture
def queued(monkeypatch):
    """The mailbox ids the settings page queued for download (nothing runs them)."""
    from sync import services, tasks

    calls = []

    def capture(task, *args):
        if task is tasks.sync_mailbox:
            calls.append(*args)
        return True

    monkeypatch.setattr(services, "publish_on_commit", capture)
    monkeypatch.setattr(services, "publish", capture)
    return calls


@pytest.fixture
def outbox(smtp_servers):
    """What the suite's STARTTLS SMTP server (test_provider's) receives in this test,
    and its knobs for failures; reset afterwards."""
    handler = smtp_servers["starttls"].handler
    handler.messages.clear()
    yield handler
    handler.messages.clear()
    handler.recipient_replies.clear()
    handler.cut_after_data.clear()


@pytest.fixture(scope="session")
def oauth_server():
    """The suite's OAuth 2.0 authorization server (HTTPS on loopback, the suite's CA)."""
    from tests.servers.oauth import OAuthServer

    server = OAuthServer().start()
    server.register("mailsetup-test", "client-secret-1")
    yield server
    server.stop()


@pytest.fixture
def oauth_provider_kind() -> str:
    """Which client the app uses for oauth_provider: "standard" (its own RFC 6749 code),
    "google" (google-auth-oauthlib) or "microsoft" (msal); parametrize to change it."""
    return "standard"


@pytest.fixture
def oauth_provider(db, oauth_server, mail_trust, oauth_provider_kind):
    """A provider that signs in with OAuth 2.0 against the suite's server."""
    from providers.models import AuthMethod
    from tests.factories import EmailProviderFactory

    base, guide, tenant = oauth_server.url, "", ""
    if oauth_provider_kind == "google":
        guide = "gmail"
    elif oauth_provider_kind == "microsoft":
        # Microsoft's layout: a tenant in the path, discovered by msal (OpenID Connect).
        guide, tenant = "outlook", "tenant-x"
        base = f"{oauth_server.url}/{tenant}/oauth2/v2.0"
    provider = EmailProviderFactory(
        name="OAuth Mail",
        auth_method=AuthMethod.OAUTH2,
        oauth_client_id="mailsetup-test",
        oauth_tenant=tenant,
        security_guide=guide,
        oauth_authorize_url=f"{base}/authorize",
        oauth_token_url=f"{base}/token",
        oauth_revoke_url=f"{base}/revoke",
    )
    provider.set_oauth_client_secret("client-secret-1")
    provider.save()
    oauth_server.state.requests.clear()
    yield provider
    # Knobs a test may have turned on the session's server.
    oauth_server.state.email_verified = oauth_server.state.forged_issuer = None


@pytest.fixture
def oauth_mailbox(synced_mailbox, oauth_server, oauth_provider, dovecot, smtp_servers):
    """A pooled Dovecot user whose mailbox signs in with tokens from the authorization
    server, for IMAP and SMTP; its stored password is wrong, so only a token works."""
    from accounts.oauth import tokens_store

    account, mailbox = synced_mailbox
    oauth_provider.imap_host, oauth_provider.imap_port = "localhost", dovecot.imaps_port
    oauth_provider.imap_security = "ssl"
    oauth_provider.smtp_host, oauth_provider.smtp_port = "localhost", smtp_servers["starttls"].port
    oauth_provider.smtp_security = "starttls"
    oauth_provider.save()
    account.provider = oauth_provider
    account.set_password("not the password")
    account.save()
    tokens_store(account=account, answer=oauth_server.grant(account.login, "mailsetup-test"))
    oauth_server.state.requests.clear()
    return account, mailbox


@pytest.fixture(scope="session")
def ews_server(oauth_server):
    """The suite's EWS protocol fake (tests/servers/ews.py: not Exchange, a server that
    answers EWS SOAP as Exchange 2016 does), on loopback with the suite's CA; bearer
    tokens are checked with the suite's authorization server."""
    from tests.servers.ews import EwsServer

    server = EwsServer(token_user=oauth_server.token_user).start()
    yield server
    server.stop()


_ews_users = itertools.count()


@pytest.fixture
def exchange_provider(db, ews_server, mail_trust):
    from providers.models import ServiceType
    from tests.factories import EmailProviderFactory

    return EmailProviderFactory(
        name="Corp Exchange",
        service_type=ServiceType.EXCHANGE,
        exchange_url=ews_server.ews_url,
        imap_host="",
        smtp_host="",
    )


@pytest.fixture
def exchange_mailbox(exchange_provider, ews_server):
    """A fresh mailbox on the EWS fake and its EmailAccount: (account, address)."""
    from tests.factories import EmailAccountFactory

    address = f"ews-{next(_ews_users):03}@corp.test"
    ews_server.add_user(address, "ews-secret", name="Erin Exchange")
    account = EmailAccountFactory(
        provider=exchange_provider, address=address, login=address, password="ews-secret"
    )
    return account, address


# What a Microsoft 365 mailbox's sign-in grants through Graph (the suite's OAuth server
# issues any scope asked for; the Graph fake checks the token's owner, not its scopes).
GRAPH_SCOPES = "Mail.ReadWrite Mail.Send Calendars.Read Contacts.ReadWrite Tasks.Read User.Read"


@pytest.fixture(scope="session")
def graph_server(oauth_server):
    """The suite's Microsoft Graph protocol fake (tests/servers/graph.py: not Microsoft's
    service), on loopback with the suite's CA; bearer tokens are checked with the
    suite's authorization server."""
    from tests.servers.graph import GraphServer

    server = GraphServer(token_user=oauth_server.token_user).start()
    yield server
    server.stop()


_graph_users = itertools.count()


@pytest.fixture
def graph_provider(db, graph_server, oauth_server, mail_trust, settings):
    """A "Microsoft 365 (Graph)" provider card signing in through msal against the
    suite's OAuth server (Microsoft's layout: a tenant in the path); Graph is the fake."""
    from providers.models import AuthMethod, ServiceType
    from tests.factories import EmailProviderFactory

    settings.GRAPH_URL = graph_server.graph_url
    base = f"{oauth_server.url}/tenant-x/oauth2/v2.0"
    provider = EmailProviderFactory(
        name="Microsoft 365 Graph", service_type=ServiceType.GRAPH,
        auth_method=AuthMethod.OAUTH2, oauth_client_id="mailsetup-test",
        oauth_tenant="tenant-x", security_guide="outlook",
        oauth_authorize_url=f"{base}/authorize", oauth_token_url=f"{base}/token",
        imap_host="", smtp_host="",
    )  # fmt: skip
    provider.set_oauth_client_secret("client-secret-1")
    provider.save()
    return provider


@pytest.fixture
def graph_mailbox(graph_provider, graph_server, oauth_server):
    """A fresh mailbox on the Graph fake and its EmailAccount, signed in with tokens
    from the suite's OAuth server: (account, address)."""
    from accounts.oauth import tokens_store
    from tests.factories import EmailAccountFactory

    address = f"graph-{next(_graph_users):03}@m365.test"
    graph_server.add_user(address, name="Gina Graph")
    account = EmailAccountFactory(
        provider=graph_provider, address=address, login=address, password="not used"
    )
    tokens_store(account=account, answer=oauth_server.grant(address, "mailsetup-test",
                                                            scope=GRAPH_SCOPES))  # fmt: skip
    return account, address


@pytest.fixture
def peter(db):
    """A CRM contact at a company, who takes part in a mailbox's meetings (Exchange's
    and Microsoft 365's meetings, tasks and contacts tests)."""
    from crm.models import Company, Contact, ContactAddress

    company = Company.objects.create(name="Partner GmbH", web_domain="partner.test")
    contact = Contact.objects.create(name="Peter Partner", company=company)
    ContactAddress.objects.create(contact=contact, address="peter@partner.test")
    return contact

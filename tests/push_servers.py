"""Dovecot instances of the push tests' own, apart from the suite's: one that lacks IDLE
(a poorer server's family), and one a test may stop and start again."""

import shutil
import tempfile
from pathlib import Path

import pytest

PUSH_USERS = [f"push-{n}@example.test" for n in range(10)]


def _dovecot(**options):
    from tests.servers.dovecot import Dovecot, DovecotUser

    root = Path(tempfile.mkdtemp(prefix="mailsetup-push-dovecot-"))
    users = [DovecotUser(name, "push-secret") for name in PUSH_USERS]
    return Dovecot(root=root, users=users, **options)


@pytest.fixture(scope="session")
def poor_dovecot():
    """A server offering IMAP4rev1 without IDLE (some hosting platforms, Exchange Online
    on some tenants): its mailboxes stay on the interval."""
    server = _dovecot(capabilities="IMAP4rev1 LITERAL+ SASL-IR ID ENABLE UIDPLUS").start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def own_dovecot():
    """A Dovecot for this test alone (it may be restarted)."""
    server = _dovecot().start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)

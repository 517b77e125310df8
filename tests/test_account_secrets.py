"""Where a mailbox password may and may not be found once the mailbox is added."""

import logging
import subprocess
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from accounts.models import EmailAccount
from accounts.services import account_create
from mail.errors import SignInError
from mail.imap_smtp.connection import check_sign_in
from providers.addresses import normalize_address
from tests.conftest import MAIL_USERS
from tests.factories import UserFactory

ALICE = "alice@example.test"
PASSWORD = MAIL_USERS[ALICE]


def _add(provider, address=ALICE):
    return account_create(
        user=UserFactory(),
        provider=provider,
        address=normalize_address(address),
        login=address,
        password=MAIL_USERS[address],
    )


def test_it_leaves_no_plaintext_password_in_a_database_dump(transactional_db, test_provider):
    _add(test_provider)
    db = connection.settings_dict
    dump = subprocess.run(
        ["pg_dump", "--data-only", "-h", db["HOST"] or "127.0.0.1", "-U", db["USER"], db["NAME"]],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert ALICE in dump  # the dump does hold the mailbox
    assert PASSWORD not in dump


def test_it_keeps_every_mailbox_usable_after_key_rotation(test_provider, settings):
    _add(test_provider, ALICE)
    _add(test_provider, "bob@example.test")
    old_key = settings.CREDENTIAL_KEYS[0]
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode(), old_key]
    out = StringIO()
    call_command("rotate_mail_keys", stdout=out)
    assert "accounts.emailaccount.password_encrypted: 2" in out.getvalue()
    # The old key can now go: every secret reads, and signs in, under the new one alone.
    settings.CREDENTIAL_KEYS = settings.CREDENTIAL_KEYS[:1]
    for account in EmailAccount.objects.select_related("provider"):
        check_sign_in(
            provider=account.provider,
            address=normalize_address(account.address),
            login=account.login,
            password=account.get_password(),
        )


def test_it_never_logs_the_password(test_provider, caplog):
    caplog.set_level(logging.DEBUG)
    _add(test_provider)
    with pytest.raises(SignInError) as caught:
        account_create(
            user=UserFactory(),
            provider=test_provider,
            address=normalize_address("bob@example.test"),
            login="bob@example.test",
            password="Wrong-Secret-123",
        )
    assert "Wrong-Secret-123" not in str(caught.value)
    assert caplog.records  # the servers' and clients' own logging was captured
    assert PASSWORD not in caplog.text
    assert "Wrong-Secret-123" not in caplog.text

"""rotate_mail_keys re-encrypts every encrypted column (issue 15, point 1).

The columns are found here by what they hold, not by the command's naming rule: every
text column of every model is read, and each value that decrypts under the old key is a
secret the rotation must carry over. A column added later that breaks the rule fails
this test instead of failing its mailboxes after the old key is dropped."""

from io import StringIO

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.core.management import call_command
from django.db import models

from accounts.models import EmailAccount, TokenRevocation
from accounts.oauth import access_token, session_for
from accounts.services import credentials_rotate, encrypted_fields
from mail.imap_smtp.connection import imap_session
from mailsetup import crypto
from mailsetup.fields import EncryptedCharField, EncryptedField, EncryptedTextField


def _secrets_under(key: str) -> set[tuple[str, str, int]]:
    """(model, column, pk) of every stored value that is a Fernet token of `key`."""
    fernet = Fernet(key)
    found = set()
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, models.CharField | models.TextField):
                continue
            rows = model.objects.exclude(**{field.name: ""}).values_list("pk", field.name)
            for pk, value in rows:
                try:
                    fernet.decrypt(value.encode())
                except (InvalidToken, ValueError, TypeError):
                    continue
                found.add((model._meta.label_lower, field.name, pk))
    return found


def test_it_re_encrypts_every_encrypted_column_and_oauth_mailboxes_keep_working(
    oauth_mailbox, oauth_server, settings
):
    account, _mailbox = oauth_mailbox
    TokenRevocation.objects.create(
        account_id=999_999, address="gone@example.test", provider=account.provider,
        token_encrypted=crypto.encrypt("a refresh token waiting for revocation"),
    )  # fmt: skip
    old_key = settings.CREDENTIAL_KEYS[0]
    before = _secrets_under(old_key)
    # Not vacuous: the secrets the app is known to keep are among those found.
    columns = {(model, column) for model, column, _pk in before}
    assert {
        ("accounts.emailaccount", "password_encrypted"),
        ("accounts.emailaccount", "oauth_access_token_encrypted"),
        ("accounts.emailaccount", "oauth_refresh_token_encrypted"),
        ("providers.emailprovider", "oauth_client_secret_encrypted"),
        ("accounts.tokenrevocation", "token_encrypted"),
    } <= columns

    new_key = Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("rotate_mail_keys", stdout=out)
    # As the command's help says: then remove the old key.
    settings.CREDENTIAL_KEYS = [new_key]

    # Every column holding a secret is marked as one by its field class.
    for label, column, _pk in before:
        assert isinstance(apps.get_model(label)._meta.get_field(column), EncryptedField), column
    assert _secrets_under(old_key) == set()
    assert _secrets_under(new_key) == before
    assert f"Re-encrypted {len(before)} values under the newest key." in out.getvalue()
    # The OAuth mailbox still works: its refresh token refreshes, the token signs in.
    EmailAccount.objects.filter(pk=account.pk).update(oauth_expires_at=None)
    assert access_token(account_id=account.pk)
    account.refresh_from_db()
    session_for(imap_session, account).logout()


def test_it_finds_every_encrypted_field_by_its_class_not_its_name(db):
    # The secrets the models hold today, named here so that a field dropped from the
    # enumeration (or a secret stored in a plain field) fails; a new secret adds its line.
    assert {(f.model._meta.label_lower, f.name) for f in encrypted_fields()} == {
        ("accounts.emailaccount", "password_encrypted"),
        ("accounts.emailaccount", "oauth_refresh_token_encrypted"),
        ("accounts.emailaccount", "oauth_access_token_encrypted"),
        ("accounts.tokenrevocation", "token_encrypted"),
        ("providers.emailprovider", "oauth_client_secret_encrypted"),
    }


class _ShortSecret(EncryptedCharField):
    """A subclass of a subclass: still a secret."""


def test_it_rotates_encrypted_fields_of_any_class_and_name(transactional_db, settings):
    from django.db import connection
    from django.test.utils import isolate_apps

    with isolate_apps("accounts"):

        class Vault(models.Model):  # noqa: DJ008
            api_key = EncryptedTextField(blank=True)
            pin = _ShortSecret(max_length=200, blank=True)
            note = models.TextField(blank=True)

            class Meta:
                app_label = "accounts"
                db_table = "test_key_rotation_vault"

    old_key = settings.CREDENTIAL_KEYS[0]
    with connection.schema_editor() as editor:
        editor.create_model(Vault)
    try:
        vault = Vault.objects.create(
            api_key=crypto.encrypt("the api key"), pin=crypto.encrypt("1234"), note="plain"
        )
        assert {f.name for f in encrypted_fields([Vault])} == {"api_key", "pin"}
        new_key = Fernet.generate_key().decode()
        settings.CREDENTIAL_KEYS = [new_key, old_key]
        outcome = credentials_rotate(models=[Vault])
        settings.CREDENTIAL_KEYS = [new_key]

        assert outcome.fields == {"accounts.vault.api_key": 1, "accounts.vault.pin": 1}
        vault.refresh_from_db()
        assert (
            crypto.decrypt(vault.api_key) == "the api key" and crypto.decrypt(vault.pin) == "1234"
        )
        for value in (vault.api_key, vault.pin):
            try:
                Fernet(old_key).decrypt(value.encode())
            except InvalidToken:
                continue
            raise AssertionError("still under the old key")
        assert vault.note == "plain"
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Vault)

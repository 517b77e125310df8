import pytest
from cryptography.fernet import Fernet

from mailsetup import crypto
from tests.factories import EmailProviderFactory


def test_it_round_trips_and_never_stores_the_plain_text(db):
    provider = EmailProviderFactory()
    provider.set_oauth_client_secret("top-secret")
    provider.save()
    provider.refresh_from_db()
    assert "top-secret" not in provider.oauth_client_secret_encrypted
    assert provider.get_oauth_client_secret() == "top-secret"


def test_it_reads_old_values_after_a_new_key_is_put_first(settings):
    old_key = settings.CREDENTIAL_KEYS[0]
    token = crypto.encrypt("password")
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode(), old_key]
    assert crypto.decrypt(token) == "password"
    rotated = crypto.rotate(token)
    settings.CREDENTIAL_KEYS = settings.CREDENTIAL_KEYS[:1]
    assert crypto.decrypt(rotated) == "password"


def test_it_says_when_no_key_can_read_a_value(settings):
    token = crypto.encrypt("password")
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.CredentialError, match="CREDENTIAL_KEYS no longer holds its key"):
        crypto.decrypt(token)

"""Model fields that hold a credential encrypted with mailsetup.crypto (a Fernet token).

The field stores the token as it is given (callers encrypt with crypto.encrypt and read
with crypto.decrypt); its class is what marks the column as a secret: `rotate_mail_keys`
re-encrypts every field that is an EncryptedField, whatever the column is called or
which subclass it is (accounts.services.encrypted_fields).
"""

from django.db import models


class EncryptedField:
    """The marker: every field class holding a Fernet token derives from it."""

    encrypted = True


class EncryptedTextField(EncryptedField, models.TextField):
    pass


class EncryptedCharField(EncryptedField, models.CharField):
    pass

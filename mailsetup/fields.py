"""Model fields of our own.

EncryptedTextField and EncryptedCharField hold a credential encrypted with
mailsetup.crypto (a Fernet token). The field stores the token as it is given (callers
encrypt with crypto.encrypt and read with crypto.decrypt); its class is what marks the
column as a secret: `rotate_mail_keys` re-encrypts every field that is an
EncryptedField, whatever the column is called or which subclass it is
(accounts.services.encrypted_fields).

StoredGeneratedField is a column the database computes and stores.
"""

from django.db import models


class EncryptedField:
    """The marker: every field class holding a Fernet token derives from it."""

    encrypted = True


class EncryptedTextField(EncryptedField, models.TextField):
    pass


class EncryptedCharField(EncryptedField, models.CharField):
    pass


class StoredGeneratedField(models.GeneratedField):
    """A GeneratedField stored by the database (db_persist=True), which PostgreSQL and
    SQLite both support, checked without a database: Django's own check asks the
    server's version (for PostgreSQL's virtual columns, which this is not), and
    `manage.py check` would then fail wherever no database answers (a build, a CI step,
    a check before the database is up)."""

    def __init__(self, *args, **kwargs):
        if kwargs.setdefault("db_persist", True) is not True:
            raise TypeError("StoredGeneratedField is stored: db_persist=True")
        super().__init__(*args, **kwargs)

    def check(self, **kwargs):
        return super().check(**{**kwargs, "databases": []})

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("db_persist", None)
        return name, path, args, kwargs

from django.conf import settings
from django.db import models
from django.urls import reverse

from mailsetup import crypto
from mailsetup.fields import EncryptedTextField
from providers.models import EmailProvider


class SyncPeriod(models.TextChoices):
    DAY = "1d", "1 day"
    THREE_DAYS = "3d", "3 days"
    WEEK = "1w", "1 week"
    MONTH = "1m", "1 month"
    THREE_MONTHS = "3m", "3 months"
    SIX_MONTHS = "6m", "6 months"
    ALL = "all", "All"


class FolderMode(models.TextChoices):
    ALL = "all", "Download all emails from mailbox"
    CUSTOM = "custom", "Download emails from customized folders"


class ContactsImport(models.TextChoices):
    OFF = "off", "Do not import contacts"
    ALL = "all", "Import all contacts"
    FOLDERS = "folders", "Import contacts from chosen folders"


class EmailAccount(models.Model):
    """A mailbox a user connected: where it lives, how to sign in, and its settings."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_accounts"
    )
    provider = models.ForeignKey(EmailProvider, on_delete=models.PROTECT, related_name="accounts")
    address = models.CharField(max_length=254)
    login = models.CharField(max_length=254)
    # Fernet token; written and read only through set_password()/get_password().
    password_encrypted = EncryptedTextField(editable=False)
    # Signed in with OAuth 2.0 instead of a password: both tokens encrypted like it.
    uses_oauth = models.BooleanField(default=False)
    oauth_refresh_token_encrypted = EncryptedTextField(blank=True, editable=False)
    oauth_access_token_encrypted = EncryptedTextField(blank=True, editable=False)
    oauth_expires_at = models.DateTimeField(null=True, blank=True)
    # The provider refused the refresh token (revoked, expired consent): nothing syncs or
    # sends until the owner signs in again ("Reconnect"), which keeps every setting.
    reconnect_needed_at = models.DateTimeField(null=True, blank=True)

    sync_period = models.CharField(
        "sync existing emails for the following period",
        max_length=5,
        choices=SyncPeriod.choices,
        default=SyncPeriod.WEEK,
    )
    auto_sync = models.BooleanField("automatically download new emails", default=True)
    folder_mode = models.CharField(
        max_length=10, choices=FolderMode.choices, default=FolderMode.ALL
    )
    send_enabled = models.BooleanField("send emails using this mailbox", default=True)
    is_default_sender = models.BooleanField("default mailbox when sending emails", default=False)
    display_name = models.CharField("display name", max_length=200, blank=True)
    message_language = models.CharField(max_length=10, blank=True)
    signature_html = models.TextField(blank=True)
    # "Add signatures to outbound emails": off keeps the signature for when it is on again.
    add_signature = models.BooleanField("add signatures to outbound emails", default=True)
    # Exchange only: calendar items and tasks, and the address book.
    meetings_import = models.BooleanField("import meetings and tasks", default=False)
    meetings_period = models.CharField(
        "import meetings and tasks for the following period",
        max_length=5,
        choices=SyncPeriod.choices,
        default=SyncPeriod.MONTH,
    )
    meetings_auto = models.BooleanField("automatically import new meetings and tasks", default=True)
    contacts_import = models.CharField(
        "import contacts", max_length=10, choices=ContactsImport.choices, default="off"
    )
    contacts_folders = models.JSONField("contact folders", default=list, blank=True)
    contacts_export = models.BooleanField("export contacts", default=False)
    # The grants (sharing app) count only while this is on: turning it off stops every
    # grant at once and keeps them for when it is turned on again.
    shared_access = models.BooleanField("allow shared access", default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Removed by its owner, who kept the downloaded emails: no secret, no sync, no
    # sending; the emails stay on the CRM's timelines. Adding the address again revives
    # the row, and the sync resumes where it stopped.
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["address"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "address"], name="account_unique_per_owner"),
            models.UniqueConstraint(
                fields=["owner"],
                condition=models.Q(is_default_sender=True),
                name="account_one_default_sender_per_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.address

    def get_absolute_url(self) -> str:
        return reverse("accounts:settings", args=[self.pk])

    def set_password(self, plain: str) -> None:
        self.password_encrypted = crypto.encrypt(plain)

    def get_password(self) -> str:
        return crypto.decrypt(self.password_encrypted)


class SignInAttempt(models.Model):
    """One sign-in check, kept for the rate limit (per user and per address)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    address = models.CharField(max_length=254)
    succeeded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "created_at"], name="attempt_user_time"),
            models.Index(fields=["address", "created_at"], name="attempt_address_time"),
        ]

    def __str__(self) -> str:
        return f"{self.address} at {self.created_at:%Y-%m-%d %H:%M}"


class AccountNotification(models.Model):
    """A message on the Email page that stays until its owner dismisses it."""

    class Kind(models.TextChoices):
        ACCOUNT_ADDED = "account_added", "Mailbox added"

    account = models.ForeignKey(
        EmailAccount, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=30, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.account}"


class AccountChange(models.Model):
    """One saved change to a mailbox's settings: who, what, old -> new, when. Values
    are display text; no credential is ever one of the fields."""

    account = models.ForeignKey(
        EmailAccount, on_delete=models.SET_NULL, null=True, related_name="changes"
    )
    # Kept as text too, so the trail outlives a removed mailbox.
    address = models.CharField(max_length=254)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    field = models.CharField(max_length=100)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.address}: {self.field} {self.old_value!r} -> {self.new_value!r}"


class TokenRevocation(models.Model):
    """A removed mailbox's refresh token, kept encrypted only until the provider has
    been asked to revoke it (RFC 7009) by the background task, which takes the
    mailbox's id. The mailbox row itself holds no credential any more, and may be gone
    (removed with its emails): hence the plain id and the provider of its own."""

    account_id = models.BigIntegerField(db_index=True)
    address = models.CharField(max_length=254)
    provider = models.ForeignKey(EmailProvider, on_delete=models.CASCADE, related_name="+")
    # Fernet token, like every credential (rotate_mail_keys re-encrypts it).
    token_encrypted = EncryptedTextField(editable=False)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"revocation of {self.address}'s sign-in at {self.provider}"

import re
from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower

from mailsetup import crypto
from mailsetup.fields import EncryptedTextField

from .addresses import AddressError, normalize_domain, registrable_domain

# Thunderbird's placeholder for the address's domain in a server name (a card's host
# names may hold it; `EmailProvider.host_for` replaces it at sign-in).
PLACEHOLDER = "%EMAILDOMAIN%"

_PORT_VALIDATORS = [MinValueValidator(1), MaxValueValidator(65535)]


class ServiceType(models.TextChoices):
    IMAP_SMTP = "imap_smtp", "IMAP/SMTP"
    EXCHANGE = "exchange", "Exchange (EWS)"
    GRAPH = "graph", "Microsoft 365 (Graph)"


class Security(models.TextChoices):
    SSL_TLS = "ssl", "SSL/TLS"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (unencrypted)"


class LoginFormat(models.TextChoices):
    EMAIL = "email", "Full email address"
    LOCAL_PART = "local_part", "Mailbox name (the part before @)"
    MANUAL = "manual", "Manual entry"


class AuthMethod(models.TextChoices):
    PASSWORD = "password", "Password"
    OAUTH2 = "oauth2", "OAuth 2.0"


class Source(models.TextChoices):
    """Where a provider or a domain entry came from."""

    BUILTIN = "builtin", "Built-in"
    ADMIN = "admin", "Administrator"
    USER = "user", "User's choice"
    ISPDB = "ispdb", "Thunderbird ISPDB"
    AUTOCONFIG = "autoconfig", "Domain autoconfig"
    MX = "mx", "MX records"


# The ports that imply a security mode; the provider form and the ISPDB import use them.
IMAP_PORTS = {993: Security.SSL_TLS, 143: Security.STARTTLS}
SMTP_PORTS = {465: Security.SSL_TLS, 587: Security.STARTTLS, 25: Security.STARTTLS}


# {service type: its backend's check of a provider card, returning {field: message}}.
# The mail backends build on this module's models, so mail.registry fills this when it
# is imported instead of this module importing mail: providers stays below mail.
CARD_RULES: dict[str, Callable[["EmailProvider"], dict]] = {}


class EmailProvider(models.Model):
    """A provider card: how to reach one email service."""

    name = models.CharField(max_length=200, unique=True)
    service_type = models.CharField(
        max_length=20, choices=ServiceType.choices, default=ServiceType.IMAP_SMTP
    )
    receive_enabled = models.BooleanField("receive emails", default=True)
    send_enabled = models.BooleanField("send emails", default=True)

    imap_host = models.CharField(
        "IMAP server",
        max_length=255,
        blank=True,
        help_text="May contain %EMAILDOMAIN%, replaced by the address's domain.",
    )
    imap_port = models.PositiveIntegerField(
        "IMAP port", null=True, blank=True, validators=_PORT_VALIDATORS
    )
    imap_security = models.CharField(
        "IMAP security", max_length=10, choices=Security.choices, default=Security.SSL_TLS
    )
    smtp_host = models.CharField(
        "SMTP server",
        max_length=255,
        blank=True,
        help_text="May contain %EMAILDOMAIN%, replaced by the address's domain.",
    )
    smtp_port = models.PositiveIntegerField(
        "SMTP port", null=True, blank=True, validators=_PORT_VALIDATORS
    )
    smtp_security = models.CharField(
        "SMTP security", max_length=10, choices=Security.choices, default=Security.SSL_TLS
    )
    exchange_url = models.URLField(
        "Exchange service address",
        blank=True,
        help_text="The EWS URL, for example https://mail.example.com/EWS/Exchange.asmx; "
        "leave it blank to find it by autodiscover from the mailbox's domain.",
    )

    login_format = models.CharField(
        max_length=20, choices=LoginFormat.choices, default=LoginFormat.EMAIL
    )
    auth_method = models.CharField(
        "authentication", max_length=20, choices=AuthMethod.choices, default=AuthMethod.PASSWORD
    )
    oauth_client_id = models.CharField("OAuth client id", max_length=255, blank=True)
    oauth_tenant = models.CharField(
        "OAuth tenant",
        max_length=100,
        blank=True,
        help_text="Microsoft 365: the directory (tenant) id or domain; blank for others.",
    )
    oauth_authorize_url = models.URLField("OAuth authorization address", blank=True)
    oauth_token_url = models.URLField("OAuth token address", blank=True)
    oauth_revoke_url = models.URLField(
        "OAuth revocation address",
        blank=True,
        help_text="RFC 7009 token revocation (Google: https://oauth2.googleapis.com/revoke): "
        "a removed mailbox's refresh token is revoked there. Blank if the provider has none.",
    )
    oauth_secret_expires_on = models.DateField(
        "client secret expires on",
        null=True,
        blank=True,
        help_text="Owners of its mailboxes are warned before this day.",
    )
    # Fernet token; read and written only through the two methods below.
    oauth_client_secret_encrypted = EncryptedTextField(blank=True, editable=False)

    app_password_required = models.BooleanField(
        "needs an app password",
        default=False,
        help_text="The provider refuses the normal account password in mail programs.",
    )
    app_password_help_url = models.URLField("app password help link", blank=True)
    stores_sent_copy = models.BooleanField(
        "files sent emails itself",
        default=False,
        help_text="The provider puts every email sent through its SMTP server in the Sent "
        "folder (Gmail does): the app then does not append a second copy.",
    )
    security_guide = models.CharField(
        "secure connection guide",
        max_length=20,
        blank=True,
        choices=[
            ("gmail", "Gmail / Google Workspace"),
            ("outlook", "Outlook.com / Microsoft 365"),
            ("yahoo", "Yahoo Mail"),
            ("aol", "AOL Mail"),
            ("zoho", "Zoho Mail"),
            ("icloud", "iCloud Mail"),
        ],
        help_text="Which provider's instructions the wizard shows next to the password.",
    )
    mx_suffixes = models.CharField(
        "MX host suffixes",
        max_length=500,
        blank=True,
        help_text="Comma-separated host-name endings of this provider's MX servers, "
        "for example google.com: a domain whose MX ends so is served by this provider.",
    )

    source = models.CharField(max_length=20, choices=Source.choices, default=Source.ADMIN)
    ispdb_id = models.CharField(
        "ISPDB id",
        max_length=255,
        blank=True,
        help_text="The emailProvider id of the ISPDB or autoconfig file this provider "
        "came from; not unique, as regional variants share one.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = [Lower("name")]
        permissions = [("manage_email_providers", "Can manage email providers")]
        indexes = [models.Index(fields=["ispdb_id"], name="provider_ispdb_id")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # The rules of the card's protocol are its backend's (mail.backend.MailBackend.
        # validate_provider), handed over by mail.registry (CARD_RULES).
        if not CARD_RULES:
            raise ImproperlyConfigured(
                "No provider card rules: mail.registry registers them when it is imported "
                "(accounts' AppConfig.ready imports it)."
            )
        rule = CARD_RULES.get(self.service_type)
        errors = rule(self) if rule else {}
        if errors:
            raise ValidationError(errors)

    def set_oauth_client_secret(self, plain: str) -> None:
        self.oauth_client_secret_encrypted = crypto.encrypt(plain) if plain else ""

    def get_oauth_client_secret(self) -> str:
        if not self.oauth_client_secret_encrypted:
            return ""
        return crypto.decrypt(self.oauth_client_secret_encrypted)

    @property
    def has_oauth_client_secret(self) -> bool:
        return bool(self.oauth_client_secret_encrypted)

    @property
    def oauth_ready(self) -> bool:
        """An OAuth provider can sign people in only once an admin registered the app."""
        return bool(
            self.oauth_client_id
            and self.oauth_client_secret_encrypted
            and self.oauth_authorize_url
            and self.oauth_token_url
        )

    def mx_suffix_list(self) -> list[str]:
        return [s.strip().lower().strip(".") for s in self.mx_suffixes.split(",") if s.strip()]

    def host_for(self, host_template: str, domain: str) -> str:
        # In any case: cards imported before their placeholder was kept upper-case
        # hold "%emaildomain%".
        return re.sub(re.escape(PLACEHOLDER), lambda _m: domain, host_template, flags=re.I)


class ProviderDomain(models.Model):
    """One row of "Email providers domains": the provider that serves a mail domain."""

    domain = models.CharField(
        max_length=253,
        unique=True,
        help_text="Lower case; international names are stored in their xn-- form.",
    )
    provider = models.ForeignKey(EmailProvider, on_delete=models.CASCADE, related_name="domains")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.ADMIN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain"]
        verbose_name = "email provider domain"
        verbose_name_plural = "email providers domains"

    def __str__(self) -> str:
        return f"{self.domain} → {self.provider}"

    def save(self, *args, **kwargs) -> None:
        # Every writer (admin, import, discovery) must store the same spelling, or the
        # unique constraint and the lookup would miss "Example.COM".
        self.domain = normalize_domain(self.domain)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        try:
            self.domain = normalize_domain(self.domain)
        except AddressError as error:
            raise ValidationError({"domain": str(error)}) from None
        stored = (
            None
            if self._state.adding
            else (
                ProviderDomain.objects.filter(pk=self.pk).values_list("domain", flat=True).first()
            )
        )
        if stored != self.domain and registrable_domain(self.domain) is None:
            # "co.uk", "com": a row for a suffix every organisation under it shares would
            # match all their mail servers by MX. Checked for a new or changed row only:
            # one stored before (an import, a newer suffix list) must not block the
            # provider's page.
            raise ValidationError(
                {
                    "domain": f"{self.domain} is a public suffix, shared by many "
                    "organisations: enter an organisation's own domain (for example "
                    f"example.{self.domain})."
                }
            )
        # Which provider has it already, rather than the unique check's "with this
        # Domain already exists".
        taken = (
            ProviderDomain.objects.filter(domain=self.domain)
            .exclude(pk=self.pk)
            .select_related("provider")
            .first()
        )
        if taken is not None:
            raise ValidationError(
                {
                    "domain": f"{self.domain} is in the list already, served by "
                    f"{taken.provider.name}: change that row to move it to another provider."
                }
            )

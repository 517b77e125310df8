"""The one settings module. Everything that differs between machines comes from the
environment through the typed readers in mailsetup.env."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_choice, env_int, env_list, env_networks, env_str
from .secrets import credential_keys, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("MAILSETUP_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = secret_key(debug=DEBUG, var_dir=VAR_DIR)
CREDENTIAL_KEYS = credential_keys(debug=DEBUG, var_dir=VAR_DIR)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Reverse proxies (addresses or networks) whose X-Forwarded-Proto and X-Forwarded-For
# are believed; requests from anywhere else have those headers dropped
# (mailsetup.proxy). With a proxy named, the https it terminated counts as https, so
# OAuth redirect URIs and secure cookies come out right.
# Each entry is checked at start: a typo must stop the process, not 500 every request.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Full-text search and trigram lookups on PostgreSQL (sync.search); inert on SQLite.
    "django.contrib.postgres",
    "django_htmx",
    "axes",
    "csp",
    "systemsettings",
    "providers",
    "accounts",
    "sync",
    "sharing",
    "sending",
    "crm",
    "push",
    # On top of the others: reads their selectors for the operator (issue 18).
    "health",
]

MIDDLEWARE = [
    "mailsetup.proxy.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files under gunicorn; runserver serves them itself in DEBUG.
    *([] if DEBUG else ["whitenoise.middleware.WhiteNoiseMiddleware"]),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "mailsetup.http.SignInAgainMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "mailsetup.urls"
WSGI_APPLICATION = "mailsetup.wsgi.application"
ASGI_APPLICATION = "mailsetup.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "mailsetup.templating.navigation",
            ],
            "builtins": ["mailsetup.templating"],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'mailsetup.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "accounts:email"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# English dates that read the same in every country (mailsetup/formats/en/formats.py).
FORMAT_MODULE_PATH = ["mailsetup.formats"]
TIME_ZONE = env_str("TIME_ZONE") or "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
MEDIA_URL = "media/"

# Production (DEBUG off): https only, and `manage.py check --deploy` clean
# (tests/test_production_settings.py runs it).
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
# Pages send the token themselves (the form field, htmx's X-CSRFToken header from the
# page): no script needs to read the cookie.
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# A load balancer's or container's health probe speaks plain HTTP to the app itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUSTED_PROXIES else None
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp) on every page. No inline script anywhere; htmx
# runs from /static with its inline indicator style and eval turned off (base.html).
# Pages that show an email or a signature in a sandboxed srcdoc frame add what that
# frame needs (srcdoc documents inherit the page's policy): see mailsetup.csp.
_SELF, _NONE = "'self'", "'none'"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [_SELF],
        "script-src": [_SELF],
        "style-src": [_SELF],
        "img-src": [_SELF, "data:"],
        "font-src": [_SELF],
        "connect-src": [_SELF],
        "frame-src": [_SELF],
        "object-src": [_NONE],
        "base-uri": [_NONE],
        "frame-ancestors": [_NONE],
        # Forms post to this site only. "Sign in with …" and "Reconnect" are sent on to
        # the provider's sign-in page by a redirect, which the browser holds to the
        # form-action of the page the form is on: those pages add that provider's
        # origin alone (mailsetup.csp.allow_oauth_forms).
        "form-action": [_SELF],
    }
}

# Logins to the app itself (django-axes): failures are counted per user name and client
# address together and per client address, never per user name alone, so nobody can
# lock a person out from the addresses they use; a lock lasts AXES_COOLOFF_TIME, and
# an administrator lifts it at once by deleting the "Access attempt" in the admin. An
# IPv6 client counts as its /64 (mailsetup.proxy.throttle_address); mailsetup.checks
# stops the app when any of this is set so that it protects nothing.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_CLIENT_IP_CALLABLE = "mailsetup.proxy.axes_client_ip"
# A successful login does not wipe the address's count (it would let anyone with an
# account reset it between guesses at other accounts).
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "mailsetup.views.locked_out"
AXES_VERBOSE = False

# "json": one JSON object a line, with the mailbox's id on every line of its sync
# (mailsetup/logs.py); "text": as Python writes them.
LOG_FORMAT = env_choice("LOG_FORMAT", ("text", "json"), "text")
# A Celery worker replaces the root logger's handlers with its own text ones at start,
# which dropped the JSON formatter: with JSON logs it keeps Django's (LOGGING below).
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Declared only when used: building it imports structlog (and, where rich is
    # installed, rich and pygments), 5 MB of every worker's memory (issue 19's B1).
    "formatters": {"json": {"()": "mailsetup.logs.json_formatter"}} if LOG_FORMAT == "json" else {},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            **({"formatter": "json"} if LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    # At DEBUG these log request headers (Authorization), tokens and whole messages:
    # kept at WARNING whatever LOG_LEVEL says.
    "loggers": {
        name: {"level": "WARNING"}
        for name in (
            "exchangelib",
            "requests_oauthlib",
            "oauthlib",
            "msal",
            "google.auth",
            "urllib3",
            # The push listener's IMAP client: every line it reads from the server.
            "aioimaplib",
        )
    },
}

# Celery. The default broker is kombu's filesystem transport under var/, so a worker
# and beat run on a developer machine with no Redis; production sets CELERY_BROKER_URL.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
_BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "processed", "control"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # Without it kombu writes its exchange table into the working directory.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
    # The filesystem transport has no broadcast exchange for remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_TASK_IGNORE_RESULT = True
# Celery would otherwise close the database connection before and after every task, so
# each task opened a new one (a new PostgreSQL backend process): measured, 300 tiny tasks
# by 2 workers took 3.8 s that way and 1.6 s reusing the connection. It is recycled by
# Django's own rule instead (CONN_MAX_AGE and health checks, see mailsetup/celery.py).
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
SYNC_CLAIM_LEASE_SECONDS = env_int("SYNC_CLAIM_LEASE_SECONDS", 300, minimum=1)
# Where the parts of large messages wait, decoded, between the server and the storage
# (sync/large.py); the system's temporary folder when unset.
SYNC_SPOOL_DIR = env_str("SYNC_SPOOL_DIR") or None
# The first retry of a failed sync waits about this long, each next one twice as long.
SYNC_RETRY_BACKOFF_SECONDS = env_int("SYNC_RETRY_BACKOFF_SECONDS", 30, minimum=1)
# How long the history of sync runs is kept (pruned hourly by beat; each mailbox's
# latest run is always kept).
SYNC_RUN_HISTORY_DAYS = env_int("SYNC_RUN_HISTORY_DAYS", 30, minimum=1)
HEARTBEAT_INTERVAL = env_int("HEARTBEAT_INTERVAL_SECONDS", 60, minimum=1)
# A bearer token that shows /healthz's details to a monitor (staff users see them too).
HEALTHZ_TOKEN = env_str("HEALTHZ_TOKEN") or ""
# A bearer token for Prometheus' scrape of /metrics (health/); staff users may read it
# signed in. Unset: only staff do.
METRICS_TOKEN = env_str("METRICS_TOKEN") or ""
CELERY_BEAT_SCHEDULE = {
    # Proves beat -> broker -> worker works; /healthz reports its age.
    "heartbeat": {
        "task": "sync.heartbeat",
        "schedule": HEARTBEAT_INTERVAL,
        "options": {"expires": HEARTBEAT_INTERVAL},
    },
    # Attachment and original files that no row names (a worker killed mid-batch).
    "files-sweep": {
        "task": "sync.files_sweep",
        "schedule": 6 * 60 * 60,
        "options": {"expires": 60 * 60},
    },
    # Sync runs older than SYNC_RUN_HISTORY_DAYS.
    "sync-runs-prune": {
        "task": "sync.runs_prune",
        "schedule": 60 * 60,
        "options": {"expires": 60 * 60},
    },
    # Search vectors the IMAP store left for later whose queued fill was lost (the task
    # queue down, a worker killed): sync.search.vectors_fill.
    "search-vectors": {
        "task": "sync.search_vectors",
        "schedule": 60,
        "options": {"expires": 60},
    },
    # Queues every mailbox whose last sync is older than MailboxSyncInterval.
    "sync-dispatch": {
        "task": "sync.dispatch",
        "schedule": env_int("SYNC_DISPATCH_SECONDS", 60, minimum=1),
        "options": {"expires": 60},
    },
    # Queues again the outgoing emails (and Sent copies) that are stuck: queued too long
    # or never (task queue down), or claimed by a worker that died (sending.services).
    # Refresh tokens of removed mailboxes whose revocation task was never queued (the
    # task queue was down) or was lost.
    "revocations-sweep": {
        "task": "accounts.revocations_sweep",
        "schedule": 15 * 60,
        "options": {"expires": 15 * 60},
    },
    "sending-sweep": {
        "task": "sending.sweep",
        "schedule": env_int("SENDING_SWEEP_SECONDS", 60, minimum=1),
        "options": {"expires": 60},
    },
}
CELERY_TIMEZONE = TIME_ZONE

# The push listener (push/listener.py, `manage.py mail_listener`).
# Whether this deployment runs one. On (the default: `make run` and docker-compose start
# it), a mailbox no listener watches reads "Disconnected listener" on the health page;
# off, a deployment that chose to run none (new mail at the download interval only)
# does not show every mailbox as broken, and the health page says push is off.
PUSH_ENABLED = env_bool("PUSH_ENABLED", default=True)
# IDLE is ended and started again this often: RFC 2177 lets a server drop a client
# idle for 30 minutes, so it must stay below 29.
PUSH_IDLE_RENEW_SECONDS = env_int("PUSH_IDLE_RENEW_SECONDS", 25 * 60, minimum=1)
if PUSH_IDLE_RENEW_SECONDS >= 29 * 60:
    raise ImproperlyConfigured("PUSH_IDLE_RENEW_SECONDS must be below 1740 (29 minutes).")
# A listener's hold on a mailbox lasts this long unless renewed; a dead listener's
# mailboxes are taken over by the others within it. Renewed every PUSH_TICK_SECONDS,
# when new and removed mailboxes are picked up and dropped too.
PUSH_LEASE_SECONDS = env_int("PUSH_LEASE_SECONDS", 60, minimum=2)
PUSH_TICK_SECONDS = env_int("PUSH_TICK_SECONDS", 10, minimum=1)
if PUSH_TICK_SECONDS * 2 > PUSH_LEASE_SECONDS:
    raise ImproperlyConfigured("PUSH_TICK_SECONDS must be at most half of PUSH_LEASE_SECONDS.")
# At most one sync queued per mailbox per this many seconds, however many changes come.
PUSH_DEBOUNCE_SECONDS = env_int("PUSH_DEBOUNCE_SECONDS", 2, minimum=0)
# Reconnecting: a random wait up to base * 2^(attempt - 1), at most max.
PUSH_BACKOFF_BASE_SECONDS = env_int("PUSH_BACKOFF_BASE_SECONDS", 2, minimum=1)
PUSH_BACKOFF_MAX_SECONDS = env_int("PUSH_BACKOFF_MAX_SECONDS", 300, minimum=1)
# Mailboxes one listener process holds, claimed at most this many per tick, signing in
# at most this many at once.
PUSH_MAX_MAILBOXES = env_int("PUSH_MAX_MAILBOXES", 2000, minimum=1)
PUSH_CLAIM_BATCH = env_int("PUSH_CLAIM_BATCH", 100, minimum=1)
PUSH_CONNECT_CONCURRENCY = env_int("PUSH_CONNECT_CONCURRENCY", 20, minimum=1)
# Exchange mailboxes are watched through an EWS pull subscription, asked this often.
PUSH_EWS_POLL_SECONDS = env_int("PUSH_EWS_POLL_SECONDS", 10, minimum=1)
# A server without IDLE is asked again after this long (it may have been upgraded).
PUSH_UNSUPPORTED_RECHECK_SECONDS = env_int("PUSH_UNSUPPORTED_RECHECK_SECONDS", 6 * 3600, minimum=1)
# Threads of the listener's own for sign-ins (reading credentials, refreshing OAuth
# tokens over HTTP); leases have one of their own.
PUSH_SIGN_IN_THREADS = env_int("PUSH_SIGN_IN_THREADS", 4, minimum=1)
# Threads for the Exchange watchers' polls (exchangelib is synchronous), apart from
# asyncio's default ones that the IMAP watchers connect with.
PUSH_EWS_THREADS = env_int("PUSH_EWS_THREADS", 8, minimum=1)
# A sync the listener queued and no worker has started yet is not queued again for this
# long (the task queue is backed up: one waiting task a mailbox is enough).
PUSH_SYNC_QUEUED_WAIT_SECONDS = env_int("PUSH_SYNC_QUEUED_WAIT_SECONDS", 600, minimum=1)

# Provider discovery (providers.discovery).
DISCOVERY_ISPDB_URL = env_str("DISCOVERY_ISPDB_URL") or "https://autoconfig.thunderbird.net/v1.1/"
DISCOVERY_STEP_TIMEOUT = env_int("DISCOVERY_STEP_TIMEOUT_SECONDS", 3, minimum=1)
DISCOVERY_TOTAL_TIMEOUT = env_int("DISCOVERY_TOTAL_TIMEOUT_SECONDS", 8, minimum=1)
DISCOVERY_USE_ISPDB = env_bool("DISCOVERY_USE_ISPDB", default=True)
DISCOVERY_USE_AUTOCONFIG = env_bool("DISCOVERY_USE_AUTOCONFIG", default=True)
DISCOVERY_USE_MX = env_bool("DISCOVERY_USE_MX", default=True)
DISCOVERY_USE_AUTODISCOVER = env_bool("DISCOVERY_USE_AUTODISCOVER", default=True)

# Connecting to mail servers (mail/).
MAIL_CONNECT_TIMEOUT = env_int("MAIL_CONNECT_TIMEOUT_SECONDS", 15, minimum=1)
# Microsoft Graph's v1.0 address (mail/graph/): Microsoft's global service, or a
# national cloud's (https://graph.microsoft.us/v1.0); the tests' protocol fake.
GRAPH_URL = env_str("GRAPH_URL") or "https://graph.microsoft.com/v1.0"
# A sending worker that stopped mid-delivery leaves its claim: after this long the sweep
# takes the email back (queued again, or "May have been sent" once handed over). A queued
# email not taken by a worker within its retry time and this grace is queued again.
SENDING_CLAIM_LEASE_SECONDS = env_int("SENDING_CLAIM_LEASE_SECONDS", 600, minimum=1)
SENDING_QUEUED_GRACE_SECONDS = env_int("SENDING_QUEUED_GRACE_SECONDS", 300, minimum=1)
# Attachments of one outgoing email together; most providers refuse above 20-25 MB.
SEND_ATTACHMENTS_MAX_BYTES = env_int("SEND_ATTACHMENTS_MAX_MB", 20, minimum=1) * 1024 * 1024
# A PEM file of extra CAs to trust, for a company mail server with its own CA.
MAIL_EXTRA_CA_FILE = env_str("MAIL_EXTRA_CA_FILE") or None
# A first sync's large batches are parsed in a process of their own beside each worker
# process (sync/parsing_process.py); off, they are parsed in the worker's helper thread.
MAIL_PARSE_PROCESS = env_bool("MAIL_PARSE_PROCESS", default=True)
# In development, the CA of `make dev-mail`'s local mail servers, which it writes under
# this same var dir: trusted from the moment it exists, whichever was started first.
# Never in production (its private key lies beside it).
MAIL_DEV_CA_FILE = str(VAR_DIR / "dev-mail" / "ca.pem") if DEBUG else None

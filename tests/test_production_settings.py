"""The production settings (DEBUG off) as a deployment gets them (issue 15, point 8):
`check --deploy` clean, https enforced, and a reverse proxy believed only when named.

Each test runs the real settings module in a child process with a production
environment, as gunicorn would; nothing is overridden in-process."""

import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest
from cryptography.fernet import Fernet

from mailsetup.settings import BASE_DIR


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict:
    var = tmp_path_factory.mktemp("production-var")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "mailsetup.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "mail.example.com",
        "TRUSTED_PROXIES": "10.0.0.0/8",
        "MAILSETUP_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
    }
    _run(env, "manage.py", "collectstatic", "--noinput", "-v", "0")
    return env


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_it_passes_check_deploy_without_a_warning(production):
    result = _run(production, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stderr


PROBE = textwrap.dedent(
    """
    import json
    import django
    django.setup()
    from django.conf import settings
    from django.test import Client, RequestFactory
    from django.urls import reverse
    from mailsetup.proxy import TrustedProxyMiddleware, client_ip

    host = {"HTTP_HOST": "mail.example.com"}
    def answer(response):
        return {"status": response.status_code, "headers": dict(response.headers),
                "cookies": {name: dict(c.items()) for name, c in response.cookies.items()}}
    out = {
        "plain": answer(Client().get("/login/", **host)),
        "https": answer(Client().get("/login/", secure=True, **host)),
        "proxied": answer(Client(REMOTE_ADDR="10.1.2.3").get(
            "/login/", HTTP_X_FORWARDED_PROTO="https", **host)),
        "spoofed": answer(Client(REMOTE_ADDR="203.0.113.9").get(
            "/login/", HTTP_X_FORWARDED_PROTO="https", **host)),
        "healthz": Client().get("/healthz", **host).status_code,
    }
    def through_proxy_middleware(remote, forwarded_for=""):
        request = RequestFactory().get(
            "/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_PROTO="https",
            HTTP_X_FORWARDED_FOR=forwarded_for, **host)
        TrustedProxyMiddleware(lambda r: None)(request)
        return request
    callback = reverse("accounts:oauth_callback")
    behind = through_proxy_middleware("10.1.2.3", "198.51.100.7, 10.9.9.9")
    direct = through_proxy_middleware("203.0.113.9", "198.51.100.7")
    out["redirect_uri_behind_proxy"] = behind.build_absolute_uri(callback)
    out["redirect_uri_spoofed"] = direct.build_absolute_uri(callback)
    out["client_ip_behind_proxy"] = client_ip(behind)
    out["client_ip_spoofed"] = client_ip(direct)
    out["settings"] = {name: getattr(settings, name) for name in (
        "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE",
        "CSRF_COOKIE_HTTPONLY")}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def probe(production) -> dict:
    return json.loads(_run(production, "-c", PROBE).stdout)


def test_it_redirects_to_https_and_sends_the_security_headers(probe):
    assert probe["plain"]["status"] == 301
    assert probe["plain"]["headers"]["Location"] == "https://mail.example.com/login/"
    page = probe["https"]
    assert page["status"] == 200
    headers = page["headers"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = dict(
        [*part.split(None, 1), ""][:2] for part in headers["Content-Security-Policy"].split("; ")
    )
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    # Forms post to this site only; a page with a provider's sign-in form adds that one.
    assert policy["form-action"] == "'self'"
    csrf = page["cookies"]["csrftoken"]
    assert csrf["secure"] and csrf["httponly"]
    assert probe["settings"] == dict.fromkeys(
        ["SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE",
         "CSRF_COOKIE_HTTPONLY"], True,
    )  # fmt: skip
    # The health probe of a load balancer or container speaks plain HTTP.
    assert probe["healthz"] in (200, 503)


def test_it_believes_https_and_the_client_address_from_the_named_proxy_only(probe):
    assert probe["proxied"]["status"] == 200
    assert (
        probe["redirect_uri_behind_proxy"] == "https://mail.example.com/mailboxes/oauth/callback/"
    )
    assert probe["client_ip_behind_proxy"] == "198.51.100.7"
    # Anyone else claiming https or another address is not believed.
    assert probe["spoofed"]["status"] == 301
    assert probe["redirect_uri_spoofed"] == "http://mail.example.com/mailboxes/oauth/callback/"
    assert probe["client_ip_spoofed"] == "203.0.113.9"


def test_it_takes_the_hsts_policy_from_the_environment(production):
    """A site not yet sure of https everywhere starts with a short HSTS period, without
    subdomains or preload; the header follows what the environment says."""
    env = {
        **production,
        "SECURE_HSTS_SECONDS": "3600",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "false",
        "SECURE_HSTS_PRELOAD": "false",
    }
    probe = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().get('/login/', secure=True, HTTP_HOST='mail.example.com')\n"
        "print(r.headers['Strict-Transport-Security'])\n"
    )
    assert _run(env, "-c", probe).stdout.strip() == "max-age=3600"

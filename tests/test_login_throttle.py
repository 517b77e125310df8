"""Failed logins to the app itself are throttled per user name and client address, and
per client address (django-axes), with a clear message and an administrator's unlock;
the throttle never locks a person out from other addresses (issue 15, point 6)."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse
from django.utils import timezone

from tests.factories import PASSWORD, UserFactory

LOGIN = reverse("login")
ATTACKER, HOME, OFFICE = "198.51.100.66", "203.0.113.10", "192.0.2.20"


@pytest.fixture
def limit(settings) -> int:
    settings.AXES_FAILURE_LIMIT = 3
    return 3


def _login(client, username: str, password: str, address: str):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_it_pauses_a_user_name_at_an_address_after_the_limit_and_says_so(client, db, limit):
    user = UserFactory()
    for _ in range(limit - 1):
        response = _login(client, user.username, "wrong", ATTACKER)
        assert response.status_code == 200  # the form again, with its error
    assert _login(client, user.username, "wrong", ATTACKER).status_code == 429
    # Now even the right password waits out the pause.
    response = _login(client, user.username, PASSWORD, ATTACKER)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.text
    assert f"Sign-in as <strong>{user.username}</strong> from your address is paused" in (
        response.text
    )
    assert "try again in 15 minutes" in response.text
    assert "_auth_user_id" not in client.session
    # The same person from any other address is not affected.
    response = _login(client, user.username, PASSWORD, HOME)
    assert response.status_code == 302 and response.url == reverse("accounts:email")


def test_it_pauses_an_address_trying_many_user_names(client, db, limit):
    users = [UserFactory() for _ in range(limit)]
    for user in users:
        _login(client, user.username, "wrong", ATTACKER)
    someone = UserFactory()
    assert _login(client, someone.username, PASSWORD, ATTACKER).status_code == 429
    assert _login(client, someone.username, PASSWORD, OFFICE).status_code == 302


def test_it_cannot_lock_a_user_out_from_other_addresses_however_long_it_tries(client, db, limit):
    user = UserFactory()
    # An attacker keeps failing, from address after address, for hours.
    for hour in range(5):
        for n in range(limit * 2):
            _login(client, user.username, "wrong", f"198.51.100.{hour * 10 + n}")
    assert _login(client, user.username, PASSWORD, HOME).status_code == 302


def test_it_lifts_the_pause_after_the_cool_off(client, db, limit):
    user = UserFactory()
    for _ in range(limit):
        _login(client, user.username, "wrong", ATTACKER)
    assert _login(client, user.username, PASSWORD, ATTACKER).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _login(client, user.username, PASSWORD, ATTACKER).status_code == 302


def test_it_lets_an_administrator_unlock_at_once(client, db, limit):
    user = UserFactory()
    for _ in range(limit):
        _login(client, user.username, "wrong", OFFICE)
    assert _login(client, user.username, PASSWORD, OFFICE).status_code == 429
    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)
    changelist = reverse("admin:axes_accessattempt_changelist")
    page = client.get(changelist)
    assert page.status_code == 200 and user.username in page.text
    attempts = list(AccessAttempt.objects.values_list("pk", flat=True))
    response = client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": attempts, "post": "yes"},
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    client.logout()
    assert _login(client, user.username, PASSWORD, OFFICE).status_code == 302


ATTACKER_NET = "2001:db8:66:1"


def test_it_counts_an_ipv6_client_by_its_slash_64(client, db, limit):
    """One subscriber holds a whole /64: rotating addresses inside it changes nothing."""
    users = [UserFactory() for _ in range(limit)]
    for n, user in enumerate(users):
        _login(client, user.username, "wrong", f"{ATTACKER_NET}::{n + 1:x}")
    someone = UserFactory()
    assert _login(client, someone.username, PASSWORD, f"{ATTACKER_NET}:ffff::9").status_code == 429
    # Its neighbour /64 is somebody else.
    assert _login(client, someone.username, PASSWORD, "2001:db8:66:2::1").status_code == 302


def test_it_pauses_a_user_name_tried_from_addresses_across_a_slash_64(client, db, limit):
    user = UserFactory()
    for n in range(limit):
        _login(client, user.username, "wrong", f"{ATTACKER_NET}:{n:x}::1")
    assert _login(client, user.username, PASSWORD, f"{ATTACKER_NET}::abcd").status_code == 429
    assert _login(client, user.username, PASSWORD, HOME).status_code == 302


def test_it_counts_an_ipv4_mapped_client_as_its_ipv4_address(client, db, limit):
    user = UserFactory()
    for _ in range(limit):
        _login(client, user.username, "wrong", f"::ffff:{ATTACKER}")
    assert _login(client, user.username, PASSWORD, ATTACKER).status_code == 429


def _throttle_errors() -> set[str]:
    from mailsetup.checks import login_throttle_check

    return {error.id for error in login_throttle_check()}


def test_it_passes_its_own_login_throttle_check(settings):
    assert _throttle_errors() == set()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"AXES_ENABLED": False}, "mailsetup.E001"),
        ({"AXES_CLIENT_IP_CALLABLE": None}, "mailsetup.E004"),
        ({"AXES_LOCKOUT_PARAMETERS": ["username"]}, "mailsetup.E007"),
        ({"AXES_LOCKOUT_PARAMETERS": ["username", "ip_address"]}, "mailsetup.E007"),
        ({"AXES_LOCKOUT_PARAMETERS": []}, "mailsetup.E006"),
        ({"AXES_IPWARE_META_PRECEDENCE_ORDER": ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"],
          "TRUSTED_PROXIES": []}, "mailsetup.E005"),
        ({"AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend"]},
         "mailsetup.E003"),
    ],
)  # fmt: skip
def test_it_refuses_a_misconfigured_login_throttle(settings, override, expected):
    for name, value in override.items():
        setattr(settings, name, value)
    assert expected in _throttle_errors()


def test_it_stops_manage_py_check_when_the_throttle_trusts_a_forgeable_header(tmp_path):
    import os
    import subprocess
    import sys

    from mailsetup.settings import BASE_DIR

    (tmp_path / "loose_settings.py").write_text(
        "from mailsetup.settings import *  # noqa\n"
        "AXES_CLIENT_IP_CALLABLE = None\n"
        "AXES_IPWARE_META_PRECEDENCE_ORDER = ['HTTP_X_FORWARDED_FOR', 'REMOTE_ADDR']\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "loose_settings", "DEBUG": "true",
           "MAILSETUP_VAR_DIR": str(tmp_path), "PYTHONPATH": f"{tmp_path}:{BASE_DIR}"}  # fmt: skip
    env.pop("TRUSTED_PROXIES", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "mailsetup.E004" in result.stderr and "mailsetup.E005" in result.stderr


PROXY = "10.1.2.3"


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]


def _login_via_proxy(client, username: str, password: str, forwarded_for: str):
    return client.post(
        LOGIN,
        {"username": username, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


@pytest.mark.parametrize(
    "forwarded",
    [
        # A proxy that appends the client's source port: a new port per connection.
        lambda n: f"{ATTACKER}:{40000 + n}",
        lambda n: f"[{ATTACKER_NET}::{n + 1:x}]:{50000 + n}",
        lambda n: f'"[{ATTACKER_NET}::{n + 1:x}]"',
        lambda n: f"[::ffff:{ATTACKER}]:{443 + n}",
    ],
    ids=["ipv4:port", "[ipv6]:port", '"[ipv6]"', "[mapped]:port"],
)
def test_it_counts_a_client_forwarded_with_a_port_under_its_bare_address(
    client, db, limit, behind_proxy, forwarded
):
    user = UserFactory()
    for n in range(limit):
        _login_via_proxy(client, user.username, "wrong", f"{forwarded(n)}, {PROXY}:8443")
    # The next connection, from yet another port, is the same client.
    response = _login_via_proxy(client, user.username, PASSWORD, forwarded(limit))
    assert response.status_code == 429
    assert _login_via_proxy(client, user.username, PASSWORD, HOME).status_code == 302


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.51.100.7:1234", "198.51.100.7"),
        (" [2001:db8:66:1::9]:443 ", "2001:db8:66:1::"),
        ('"[2001:db8:66:1::9]"', "2001:db8:66:1::"),
        ('"[2001:db8::1]:4711"', "2001:db8::"),
        ("[::ffff:198.51.100.7]:80", "198.51.100.7"),
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:66:1::9", "2001:db8:66:1::"),
        # Garbage stays what it was, without a crash.
        ("unknown", "unknown"),
        ("198.51.100.7:http", "198.51.100.7:http"),
        ("[2001:db8::1", "[2001:db8::1"),
        ("[not-an-address]:80", "[not-an-address]:80"),
        ("[2001:db8::1]:x", "[2001:db8::1]:x"),
        ('"', '"'),
        ("", ""),
    ],
)
def test_it_throttles_a_forwarded_entry_under_its_bare_address(entry, expected):
    from mailsetup.proxy import throttle_address

    assert throttle_address(entry) == expected


def test_it_finds_the_client_behind_a_proxy_that_writes_ports(rf, behind_proxy):
    from mailsetup.proxy import client_ip

    request = rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.7:5555, 10.9.9.9:443")
    assert client_ip(request) == "198.51.100.7"

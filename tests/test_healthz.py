"""/healthz: "ok" or "not ok" for anyone (a load balancer's probe), the details only for
staff users or a caller with HEALTHZ_TOKEN (issue 15, point 9)."""

import pytest
from django.urls import reverse

from sync.services import heartbeat_record
from tests.factories import UserFactory

DETAILS = {"database", "workers", "heartbeat_age_seconds"}


def test_it_tells_the_public_only_ok_or_not_ok(client, db):
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    assert response.json() == {"status": "not ok"}
    heartbeat_record(hostname="worker@test")
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    # A signed-in user who is not staff is the public too.
    client.force_login(UserFactory())
    assert client.get(reverse("healthz")).json() == {"status": "ok"}


def test_it_shows_staff_the_details(client, db):
    client.force_login(UserFactory(is_staff=True))
    body = client.get(reverse("healthz")).json()
    assert body == {
        "status": "not ok",
        "database": "ok",
        "workers": "no recent heartbeat",
        "heartbeat_age_seconds": None,
    }
    heartbeat_record(hostname="worker@test")
    body = client.get(reverse("healthz")).json()
    assert (body["status"], body["workers"], body["heartbeat_age_seconds"]) == ("ok", "ok", 0)


@pytest.mark.parametrize(
    ("offered", "details"),
    [("Bearer monitor-token-123", True), ("Bearer wrong", False), ("monitor-token-123", True),
     ("", False)],
)  # fmt: skip
def test_it_shows_the_details_to_a_caller_with_the_token(client, db, settings, offered, details):
    settings.HEALTHZ_TOKEN = "monitor-token-123"
    headers = {"HTTP_AUTHORIZATION": offered} if offered else {}
    body = client.get(reverse("healthz"), **headers).json()
    assert (body.keys() >= DETAILS) is details


def test_it_shows_no_details_to_any_token_when_none_is_configured(client, db, settings):
    settings.HEALTHZ_TOKEN = ""
    body = client.get(reverse("healthz"), HTTP_AUTHORIZATION="Bearer ").json()
    assert body == {"status": "not ok"}


@pytest.fixture
def database_down(transactional_db):
    """The database stops answering (a closed port) for the rest of the test."""
    import socket

    from django.db import connection

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    saved = dict(connection.settings_dict)

    def down():
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port))

    yield down
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@pytest.mark.parametrize("caller", ["anonymous", "user", "staff", "token", "staff+token"])
def test_it_answers_every_caller_when_the_database_is_down(client, settings, database_down, caller):
    settings.HEALTHZ_TOKEN = "monitor-token-123"
    if caller in ("user", "staff", "staff+token"):
        # A session cookie: asking who the caller is needs the database too.
        client.force_login(UserFactory(is_staff=caller != "user"))
    headers = {"HTTP_AUTHORIZATION": "Bearer monitor-token-123"} if "token" in caller else {}
    database_down()

    response = client.get(reverse("healthz"), **headers)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ok"
    if "token" in caller:
        assert body["database"] == "unreachable" and body["heartbeat_age_seconds"] is None
    else:
        # A staff user cannot be told from anyone else without the database.
        assert body == {"status": "not ok"}


@pytest.mark.parametrize("heartbeat", ["never", "stale", "fresh", "future"])
@pytest.mark.parametrize("caller", ["anonymous", "user", "staff", "token"])
def test_it_answers_every_caller_in_every_worker_state(client, db, settings, heartbeat, caller):
    from datetime import timedelta

    from django.utils import timezone

    from sync.models import WorkerHeartbeat

    settings.HEALTHZ_TOKEN = "monitor-token-123"
    if heartbeat != "never":
        heartbeat_record(hostname="worker@test")
        ago = {"stale": timedelta(hours=1), "fresh": timedelta(0), "future": -timedelta(hours=1)}
        WorkerHeartbeat.objects.update(beat_at=timezone.now() - ago[heartbeat])
    if caller in ("user", "staff"):
        client.force_login(UserFactory(is_staff=caller == "staff"))
    headers = {"HTTP_AUTHORIZATION": "Bearer monitor-token-123"} if caller == "token" else {}

    response = client.get(reverse("healthz"), **headers)

    ok = heartbeat == "fresh"
    assert response.status_code == (200 if ok else 503)
    body = response.json()
    assert body["status"] == ("ok" if ok else "not ok")
    assert (body.keys() >= DETAILS) is (caller in ("staff", "token"))
    if heartbeat == "future" and caller in ("staff", "token"):
        assert body["workers"] == "heartbeat stamped in the future: a server's clock is wrong"

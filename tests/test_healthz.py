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

from django.urls import reverse

from sync.services import heartbeat_record


def test_it_reports_no_heartbeat_before_any_worker_ran(client, db):
    body = client.get(reverse("healthz")).json()
    assert body == {
        "database": "ok",
        "workers": "no recent heartbeat",
        "heartbeat_age_seconds": None,
    }


def test_it_reports_workers_ok_after_a_heartbeat(client, db):
    heartbeat_record(hostname="worker@test")
    body = client.get(reverse("healthz")).json()
    assert body["workers"] == "ok"
    assert body["heartbeat_age_seconds"] == 0

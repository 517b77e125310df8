"""The benchmark's breakdown (bench/breakdown.py) wraps the engine's steps by name: a
renamed step must fail here, not in the middle of `make bench --breakdown`."""

import psycopg
from django.db import transaction

from bench import breakdown
from sync import engine, files, models, services, store
from sync.services import mailbox_sync
from tests.mailbox import make_message


def test_it_times_the_fetch_the_parse_and_the_store_of_a_real_sync(
    synced_mailbox, monkeypatch, tmp_path
):
    # Put back by monkeypatch after the test: install() rebinds them for good.
    for name in ("_store_fetched", "_fetched"):
        monkeypatch.setattr(engine.AccountSyncer, name, getattr(engine.AccountSyncer, name))
    monkeypatch.setattr(engine.FetchedBatch, "parsed", engine.FetchedBatch.parsed)
    monkeypatch.setattr(psycopg.Connection, "wait", psycopg.Connection.wait)
    monkeypatch.setattr(engine, "fetch_bodies", engine.fetch_bodies)
    for owner, name in (
        (store.Store, "_identify"), (store, "insert_rows"),
        (store, "insert_rows_skipping_existing"), (files.WrittenFiles, "save"),
        (store.Attachment.objects, "bulk_create"), (store, "emails_link"),
        (services, "_renew"), (models.SyncRun, "save_progress"),
        (transaction.Atomic, "__exit__"),
    ):  # fmt: skip
        monkeypatch.setattr(owner, name, getattr(owner, name))
    breakdown.install()
    breakdown.reset()
    account, mailbox = synced_mailbox
    mailbox.append(
        "INBOX",
        make_message(subject="timed", attachment=("offer.pdf", b"%PDF-1.4 timed")),
        make_message(subject="too"),
    )
    mailbox_sync(account_id=account.pk)
    assert [step for step in breakdown.STEPS if not breakdown.totals[step] > 0] == []
    breakdown.write(str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text().startswith("fetch ")

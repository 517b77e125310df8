"""Graph's JSON batches of message sources, where a fresh-eyed review found them
wanting: one wait for a throttled batch, no more than a budget of sources held at once
when Graph says no sizes, an odd error document inside a batch taken as the server's.
Against the Graph protocol fake (tests/servers/graph.py), not Microsoft's service."""

from datetime import UTC, datetime, timedelta

from mail.graph.reader import GraphReader
from sync.delta import STORE_BYTES
from sync.models import Email, SyncRun
from sync.services import mailbox_sync
from tests.mailbox import make_message

# The reader fixture and helpers of the Graph backend's tests.
from tests.test_graph_backend import _created, backend, mime, reader  # noqa: F401


def test_it_waits_once_for_a_batch_whose_items_are_all_throttled(
    reader,  # noqa: F811 (the imported fixture)
    graph_server,
    graph_mailbox,
):
    # Graph throttles a mailbox, not one message: a batch's items come back 429 together,
    # each with the same Retry-After. One wait covers them all; a wait per item holds
    # the worker for 20 x Retry-After (here 500 s) with nothing to show for it.
    address = graph_mailbox[1]
    for number in range(20):
        graph_server.add_message("inbox", mime(number), mailbox=address)
    created = _created(reader, graph_server, address)
    graph_server.throttle_next("message.value", retry_after=25, count=20, mailbox=address)
    slept: list[float] = []
    reader.client.sleep = slept.append

    read = reader.read(created, size_limit=10_000_000)

    assert len(read) == 20
    assert sum(slept) <= reader.client.max_wait, slept


def test_it_holds_no_more_than_a_chunk_of_sources_at_once(graph_mailbox, graph_server, monkeypatch):
    # 552a03c counts a source of unknown size as 150 KB, so 20 go to a chunk; when the
    # batch answer is above a page (16 MB) each is read alone, whole, and all 20 are held
    # together before the store: 20 x the size limit in one worker, where a chunk was
    # bounded by STORE_BYTES (one larger message alone).
    account, address = graph_mailbox
    received = datetime.now(UTC) - timedelta(hours=1)
    for number in range(20):
        graph_server.add_message(
            "inbox",
            make_message(subject=f"big {number}", to=address, body="x" * 1_000_000),
            received=received,
            mailbox=address,
        )
    held: list[int] = []
    real_read = GraphReader.read

    def read(self, items, *, size_limit, **kwargs):
        found = real_read(self, items, size_limit=size_limit, **kwargs)
        held.append(sum(len(item.raw or b"") for item in found))
        return found

    monkeypatch.setattr(GraphReader, "read", read)

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 20
    assert max(held) <= STORE_BYTES + 1_100_000, held


def test_it_takes_a_batch_item_whose_error_is_not_an_object_as_a_server_error(
    reader,  # noqa: F811 (the imported fixture)
):
    # A single answer's odd error document is caught (GraphClient._error); one inside a
    # batch escapes as AttributeError, which no caller takes as the server's (OurBug).
    answer = {"id": "0", "status": 500, "headers": {}, "body": {"error": "boom"}}

    error = reader.client._batch_answer(answer, 1000)

    assert error.kind == "temporary"


def test_it_downloads_a_batched_source_once_even_without_its_read_flag(
    reader,  # noqa: F811 (the imported fixture)
    graph_server,
    graph_mailbox,
):
    # Messages asked for again by their ids alone (an unstored note's retry) carry no
    # read flag: the batch's source is kept and only the flag is asked for.
    from mail.reading import NewItem

    address = graph_mailbox[1]
    ids = [graph_server.add_message("inbox", mime(n), mailbox=address) for n in range(2)]
    graph_server.set_read(ids[0], True)
    graph_server.state.requests.clear()

    read = {item.id: item for item in reader.read([NewItem(i) for i in ids], size_limit=10**6)}

    assert (read[ids[0]].seen, read[ids[1]].seen) == (True, False)
    mine = [r for r in graph_server.requests if r["user"] == address]
    assert [r["route"] for r in mine if not r.get("batch")].count("message.value") == 0
    assert [r["route"] for r in mine].count("message") == 2

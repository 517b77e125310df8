"""Issue 19, target 2: search worth the name. On PostgreSQL (the suite's database):
full-text over subject, sender, recipients and body, ranked, highlighted and escaped,
by the mailbox's language; parts of addresses and names through trigrams; the contact
and company timelines too. The SQLite fallback (icontains) is checked through its own
branch, as the suite has no SQLite mode."""

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from django.conf import settings
from django.db import DataError, ProgrammingError, connection, transaction
from django.urls import reverse

from crm.models import Activity, Company, Contact
from sync import search, tasks
from sync.models import Email
from tests.factories import EmailAccountFactory, UserFactory
from tests.mailbox import make_message

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _email(account, key, **fields):
    fields.setdefault("sent_at", NOW - timedelta(hours=len(key)))
    return Email.objects.create(account=account, message_key=key, **fields)


def _found(client, query) -> list[str]:
    page = client.get(reverse("accounts:email"), {"q": query}).text
    return [
        re.sub("</?mark>", "", subject)
        for subject in re.findall(r'href="/emails/\d+/">(.*?)</a>', page, re.S)
    ]


def test_it_finds_words_in_body_recipients_and_parts_of_addresses_ranked(client, db):
    account = EmailAccountFactory()
    _email(account, "a", subject="Weekly notes", text_body="the turbine order is late")
    _email(account, "b", subject="Turbine order", text_body="see", sent_at=NOW - timedelta(days=5))
    _email(
        account, "c", subject="Lunch", to=[{"name": "Ola Nordmann", "address": "ola@fjord.test"}]
    )
    _email(account, "d", subject="From the plant", from_name="Ingrid Bergström",
           from_address="ingrid.bergstrom@vattenkraft.test")  # fmt: skip
    _email(account, "e", subject="Unrelated", text_body="nothing here")
    client.force_login(account.owner)
    # The subject weighs more than the body, whatever the dates.
    assert _found(client, "turbine order") == ["Turbine order", "Weekly notes"]
    assert _found(client, "ola@fjord.test") == ["Lunch"]
    assert _found(client, "vattenkr") == ["From the plant"]  # part of an address
    assert _found(client, "bergstr") == ["From the plant"]  # part of a name
    # What matched is marked where the sender shows; nothing is marked where it does not.
    page = client.get(reverse("accounts:email"), {"q": "BERGSTR"}).text
    assert '<td data-label="From">Ingrid <mark>Bergstr</mark>öm</td>' in page
    assert "<mark>" not in client.get(reverse("accounts:email"), {"q": "vattenkr"}).text
    # Shorter than a sender is searched for: found by the word, the sender not marked.
    _email(account, "jo", subject="Jo", from_name="John Smith")
    page = client.get(reverse("accounts:email"), {"q": "jo"}).text
    assert '<td data-label="From">John Smith</td>' in page and "<mark>Jo</mark>" in page
    assert _found(client, "ingrid bergstr") == ["From the plant"]  # with a space
    assert _found(client, "zeppelin") == []
    assert _found(client, "address") == []  # the recipients' values, not their keys


def test_it_reads_a_german_mailbox_in_german(client, db):
    german = EmailAccountFactory(message_language="de")
    _email(german, "r", subject="Ihre Rechnungen vom März", text_body="Zahlungen bitte")
    client.force_login(german.owner)
    assert _found(client, "rechnung") == ["Ihre Rechnungen vom März"]
    assert _found(client, "Zahlung") == ["Ihre Rechnungen vom März"]
    plain = EmailAccountFactory()
    _email(plain, "p", subject="Ihre Rechnungen", text_body="")
    client.force_login(plain.owner)
    assert _found(client, "rechnung") == []  # 'simple': no stemming, still correct
    assert _found(client, "rechnungen") == ["Ihre Rechnungen"]


def test_it_highlights_the_words_and_escapes_everything_else(client, db):
    account = EmailAccountFactory()
    _email(account, "x", subject='Offer <script>alert("x")</script> \ue000',
           text_body='Our offer: <img src=x onerror=alert(1)> and more')  # fmt: skip
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email"), {"q": "offer"}).text
    assert "<mark>Offer</mark> &lt;script&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("<mark>") == page.count("</mark>")


def _snippet(client, query) -> str:
    page = client.get(reverse("accounts:email"), {"q": query}).text
    return " ".join(re.findall(r'<div class="muted snippet">(.*?)</div>', page, re.S))


def test_it_shows_the_part_of_a_long_body_where_the_words_are(client, db):
    account = EmailAccountFactory(message_language="en")
    filler = "lorem ipsum dolor sit amet " * 400  # 10,800 characters
    body = f"there {filler} the pumps were delivered {filler} invoices follow"
    _email(account, "far", subject="Notes", text_body=body)
    _email(account, "decoy", subject="Stock",
           text_body=f"pumpernickel bread {filler} two pumps broke")  # fmt: skip
    client.force_login(account.owner)
    # Far into the body, as typed: the part around it.
    assert "the <mark>pumps</mark> were delivered" in _snippet(client, "pumps")
    # Typed otherwise than written ("pump" is stemmed to what "pumps" is): the body's
    # first 20,000 characters are read, and it is still found and marked.
    snippet = _snippet(client, "pump")
    assert "the <mark>pumps</mark> were" in snippet and "two <mark>pumps</mark> broke" in snippet
    # A word found early inside another ("the" in "there"), or a stop word: the next
    # place a typed word is found.
    assert "the <mark>pumps</mark> were" in _snippet(client, "the pumps")
    # All the words, far apart: one of them is found, and marked where it shows.
    assert "the <mark>pumps</mark> were" in _snippet(client, "pumps invoices")


def test_it_keeps_the_search_vector_on_every_write_and_the_configs_agree(db):
    account = EmailAccountFactory()
    email = _email(account, "v", subject="first")
    Email.objects.filter(pk=email.pk).update(subject="second words")
    with connection.cursor() as cursor:
        cursor.execute("SELECT search::text FROM sync_email WHERE id = %s", [email.pk])
        vector = cursor.fetchone()[0]
        assert "'second':1A" in vector and "first" not in vector
        for code, name in [*search.CONFIGS.items(), ("xx", "simple"), ("", "simple")]:
            cursor.execute("SELECT sync_search_config(%s)::text", [code])
            assert cursor.fetchone()[0] == name
        cursor.execute("SELECT sync_search_config('pt-br')::text")
        assert cursor.fetchone()[0] == "portuguese"


def test_it_searches_the_contact_and_company_timelines(client, db):
    account = EmailAccountFactory()
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    ann = Contact.objects.create(name="Ann", company=acme)
    for key, subject in [("t1", "Contract draft"), ("t2", "Holiday photos")]:
        email = _email(account, key, subject=subject)
        email.contacts.add(ann)
        email.companies.add(acme)
    client.force_login(account.owner)
    for url in (reverse("crm:contact", args=[ann.pk]), reverse("crm:company", args=[acme.pk])):
        page = client.get(url, {"q": "contract"}).text
        assert "Contract draft" in page and "Holiday photos" not in page
        assert "Nothing matches “zeppelin”." in client.get(url, {"q": "zeppelin"}).text


def test_it_finds_every_match_on_a_timeline_not_only_the_newest_ranked(client, db, monkeypatch):
    # A timeline lists its matches by date, a page at a time: the Email page's bound on
    # ranking does not cut it short.
    monkeypatch.setattr(search, "RANKED", 2)
    monkeypatch.setattr("crm.views.timelines.TIMELINE_PAGE", 2)
    account = EmailAccountFactory()
    ann = Contact.objects.create(name="Ann")
    for n in range(5):
        email = _email(account, f"c{n}", subject=f"Contract {n}", sent_at=NOW - timedelta(days=n))
        email.contacts.add(ann)
    client.force_login(account.owner)
    url, found, after = reverse("crm:contact", args=[ann.pk]), [], None
    for _page in range(3):
        page = client.get(url, {"q": "contract", **({"after": after} if after else {})}).text
        found += re.findall(r"Contract \d", page)
        after = re.search(r'after=([^"&]+)', page)
        after = after and unquote(after.group(1))
        if not after:
            break
    assert found == [f"Contract {n}" for n in range(5)]


def test_it_says_on_a_timeline_search_which_emails_are_still_being_prepared(client, db):
    account = EmailAccountFactory()
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    ann = Contact.objects.create(name="Ann", company=acme)
    with transaction.atomic(), search.vectors_later():
        waiting = _email(account, "tw", subject="Pumps", text_body="the turbines")
    waiting.contacts.add(ann)
    waiting.companies.add(acme)
    other = EmailAccountFactory()  # another user's backlog is not this user's to hear of
    with transaction.atomic(), search.vectors_later():
        _email(other, "ow", subject="Theirs")
    client.force_login(account.owner)
    for url in (reverse("crm:contact", args=[ann.pk]), reverse("crm:company", args=[acme.pk])):
        page = client.get(url, {"q": "turbines"}).text
        assert "1 email just downloaded is still being prepared for search" in page
        assert "Pumps" not in page  # found by subject and sender only, meanwhile
        assert "still being prepared" not in client.get(url).text  # only for a search
    search.vectors_fill()
    page = client.get(reverse("crm:contact", args=[ann.pk]), {"q": "turbines"}).text
    assert "still being prepared" not in page and "Pumps" in page


def _in_database_order(account, text: str) -> list[int]:
    """The order the Email page's search had when the database sorted it (best first,
    unranked last, then newest, undated last, then the latest stored), for the newest
    RANKED matches."""
    from django.contrib.postgres.search import SearchRank
    from django.db.models import F

    query = search.search_query(text, [account.pk])
    matches = search.matching(Email.objects.filter(account=account), text, [account.pk])
    newest = matches.order_by("-sent_at", "-pk").values("pk")[: search.RANKED]
    return list(
        Email.objects.filter(pk__in=newest)
        .annotate(rank=SearchRank(F("search"), query))
        .order_by(F("rank").desc(nulls_last=True), F("sent_at").desc(nulls_last=True), "-pk")
        .values_list("pk", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_it_orders_search_results_best_first_then_newest_and_pages_them(client, monkeypatch):
    account = EmailAccountFactory()
    emails = Email.objects.filter(account=account)
    for n in range(3):  # equal ranks: newest first
        _email(account, f"same{n}", subject="Pump report", sent_at=NOW - timedelta(days=n))
    _email(account, "undated", subject="Pump report", sent_at=None)  # after dated ties
    _email(account, "title", subject="Pump pump pump", sent_at=NOW - timedelta(days=30))
    _email(account, "body", subject="Notes", text_body="a pump", sent_at=NOW)
    _email(account, "tie", subject="Pump report", sent_at=NOW)  # same date: latest stored
    # Found by a part of its sender's address alone: rank 0, above the unranked.
    _email(account, "sender", subject="Hello", from_address="pumpworks@vendor.test",
           sent_at=NOW - timedelta(days=40))  # fmt: skip
    with transaction.atomic(), search.vectors_later():
        _email(account, "waiting", subject="Pump delivery", sent_at=NOW + timedelta(days=1))
    _email(account, "other", subject="Lunch")
    expected = _in_database_order(account, "pump")
    assert len(expected) == 9
    assert expected[-2:] == [emails.get(message_key=key).pk for key in ("sender", "waiting")]
    assert emails.get(message_key="undated").pk in expected[:-3]  # ranked above `body`
    assert search.found(emails, "pump", [account.pk]).ids == expected
    assert not search.found(emails, "pump", [account.pk]).more

    # Pages by number over them, each page's emails read by id.
    monkeypatch.setattr("accounts.views.mailboxes.PANEL_PAGE", 3)
    client.force_login(account.owner)
    paged = []
    for number in (1, 2, 3):
        page = client.get(reverse("accounts:email"), {"q": "pump", "page": number}).text
        paged += [int(pk) for pk in re.findall(r'href="/emails/(\d+)/"', page)]
    assert paged == expected
    assert "9 emails" in page

    # At most RANKED: the newest ones, best first among them.
    monkeypatch.setattr(search, "RANKED", 4)
    found = search.found(emails, "pump", [account.pk])
    assert len(found) == found.count() == 4 and found.more
    assert found.ids == _in_database_order(account, "pump")
    assert set(found.ids) == set(
        emails.filter(pk__in=expected).order_by("-sent_at", "-pk").values_list("pk", flat=True)[:4]
    )
    # The page does not say 4 match when 9 do.
    page = client.get(reverse("accounts:email"), {"q": "pump"}).text
    assert "More than 4 emails matching" in page and "Page 1 of 2" in page


def test_it_keeps_the_newest_matches_of_words_and_senders_together(db, monkeypatch):
    """The words and the senders are read apart (sync.search.found): what is kept is
    still the newest RANKED + 1 of all the matches, each once, ranked as one query
    ranked them all."""
    account = EmailAccountFactory()
    emails = Email.objects.filter(account=account)
    for day in (1, 3, 5, 7, 9, 11):
        _email(account, f"word{day}", subject="Pump report", sent_at=NOW - timedelta(days=day))
    for day in (2, 6, 10, 12):  # by a part of the sender's name alone
        _email(account, f"name{day}", subject="Hello", from_name="Jo Pumpernickel",
               sent_at=NOW - timedelta(days=day))  # fmt: skip
    # The same date as a match by words: the latest stored first, whichever part.
    _email(account, "tie", subject="Hi", from_name="Pumpernickel", sent_at=NOW - timedelta(days=3))
    # Both: one email, found once.
    _email(account, "both", subject="Pump", from_name="Pumpernickel", sent_at=NOW)
    _email(account, "undated", subject="Hi", from_address="pumpernickel@x.test", sent_at=None)
    # A sender's match whose words share a part of the query ranks by it, as before.
    _email(account, "partly", subject="Report", from_name="Ingrid Bergström",
           sent_at=NOW - timedelta(days=4))  # fmt: skip
    _email(account, "ingrid", subject="Notes", text_body="ingrid berg", sent_at=NOW)
    # Waiting for its vector, found by its sender: unranked, after every ranked one.
    with transaction.atomic(), search.vectors_later():
        _email(account, "waiting", subject="Hi", from_name="Pumpernickel AG",
               sent_at=NOW + timedelta(days=1))  # fmt: skip
    matches = {"pump": 14, "pumpernick": 8, "report": 7, "ingrid berg": 2}
    # Every cut: the words alone filling RANKED + 1 (their last date then bounds the
    # senders' walk) or not, the senders' alone, the undated one in or out.
    for ranked in range(1, 16):
        monkeypatch.setattr(search, "RANKED", ranked)
        for text, count in matches.items():
            found = search.found(emails, text, [account.pk])
            assert found.ids == _in_database_order(account, text), (ranked, text)
            assert found.more == (count > ranked), (ranked, text)
            # Headlines are read for the emails found by their words only.
            words = emails.filter(search=search.search_query(text, [account.pk]))
            by_words = set(words.values_list("pk", flat=True))
            assert found.worded == by_words & set(found.ids), (ranked, text)
    monkeypatch.setattr(search, "RANKED", 20)
    keys = dict(emails.values_list("pk", "message_key"))
    ordered = [keys[pk] for pk in search.found(emails, "pump", [account.pk]).ids]
    assert ordered[-1] == "waiting" and ordered.index("tie") > ordered.index("name2")
    monkeypatch.setattr(search, "RANKED", 3)
    newest = ["waiting", "undated", "both"]
    assert set(search.found(emails, "pump", [account.pk]).ids) == set(
        emails.filter(message_key__in=newest).values_list("pk", flat=True)
    )


def test_it_ranks_a_match_by_its_sender_by_the_words_it_shares_and_cuts_at_ties(db, monkeypatch):
    """A match by its sender alone is ranked by what its words share with the query
    (English and 'simple' ORed: a part of them counts), not 0; and at the words' last
    date, a sender's match stored later is kept before the words' one."""
    account = EmailAccountFactory(message_language="en")
    emails = Email.objects.filter(account=account)
    old = _email(account, "old", subject="Hello", from_name="Ingrid Bergström",
                 sent_at=NOW - timedelta(days=5))  # fmt: skip
    new = _email(account, "new", subject="Hello", from_name="Xingrid Bergman",
                 sent_at=NOW - timedelta(days=1))  # fmt: skip
    found = search.found(emails, "ingrid berg", [account.pk])
    assert found.ids == [old.pk, new.pk] == _in_database_order(account, "ingrid berg")

    other = EmailAccountFactory()
    emails = Email.objects.filter(account=other)
    first = _email(other, "w1", subject="Pump", sent_at=NOW)
    _email(other, "w2", subject="Pump", sent_at=NOW - timedelta(days=1))
    tie = _email(
        other, "s", subject="Hi", from_name="Pumpernickel", sent_at=NOW - timedelta(days=1)
    )
    monkeypatch.setattr(search, "RANKED", 1)
    # The newest two: w1, then of the two at w2's date the one stored later.
    found = search.found(emails, "pump", [other.pk])
    assert found.ids == [first.pk] and found.more
    monkeypatch.setattr(search, "RANKED", 2)
    assert set(search.found(emails, "pump", [other.pk]).ids) == {first.pk, tie.pk}


def test_it_reads_a_headline_around_each_word_before_the_whole_body(db):
    """sync_body_headline: a part of the body around a typed word; a word found inside
    another first ("the" in "there") marks nothing there, and the next one's place is
    read, not the body's first 20,000 characters (which would show two fragments)."""
    filler = "lorem ipsum dolor sit amet " * 80
    body = f"there {filler} the pumps were late {filler} two pumps broke {filler}"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sync_body_headline('english', %s, plainto_tsquery('english', 'pumps'),"
            " %s, %s, %s)",
            [body, ["the", "pumps"], search.BODY_HEADLINE, search.START],
        )
        headline = cursor.fetchone()[0]
    assert headline.count(search.START) == 1 and "…" not in headline
    assert "the \ue000pumps\ue001 were late" in headline
    # No word of it anywhere: the body's start, as ts_headline gives it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sync_body_headline('english', %s, plainto_tsquery('english', 'valves'),"
            " %s, %s, %s)",
            [body, ["valves"], search.BODY_HEADLINE, search.START],
        )
        assert cursor.fetchone()[0].startswith("there lorem ipsum")


def test_it_indexes_the_sender_for_search_on_postgresql(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'sync_email'"
            " AND indexname IN ('email_sent_sender', 'email_sender_trgm')"
        )
        indexes = dict(cursor.fetchall())
    assert (
        "(sent_at DESC, id DESC) INCLUDE (account_id, sender_upper)" in indexes["email_sent_sender"]
    )
    assert "gin (sender_upper gin_trgm_ops)" in indexes["email_sender_trgm"]


def test_it_searches_no_mailbox_for_a_user_with_none(client, db):
    user = UserFactory()
    client.force_login(user)
    page = client.get(reverse("accounts:email"), {"q": "pump"})
    assert page.status_code == 200 and "0 emails matching" in page.text
    assert search.found(Email.objects.none(), "pump", []).ids == []


def test_it_finds_a_part_of_a_sender_as_the_database_upper_cases_it(db):
    """Python's upper() is not PostgreSQL's ("ß"): both sides are upper-cased there."""
    account = EmailAccountFactory()
    _email(account, "g", subject="Hallo", from_name="Peter Großmann", from_address="p@x.test")
    emails = Email.objects.filter(account=account)
    for text in ("roßm", "ROßM", "großmann p@x"):
        assert len(search.found(emails, text, [account.pk])) == 1, text
        assert search.matching(emails, text, [account.pk]).count() == 1, text


def test_it_falls_back_to_icontains_where_there_is_no_full_text(db, monkeypatch):
    monkeypatch.setattr(search, "postgres", lambda: False)
    account = EmailAccountFactory()
    wanted = [
        _email(account, "s1", subject="Quarterly offer"),
        _email(account, "s2", text_body="the OFFER stands"),
        _email(account, "s3", from_address="offers@shop.test"),
        _email(account, "s4", to=[{"name": "Offerman", "address": "n@x.test"}]),
    ]
    _email(account, "s5", subject="nothing")
    assert set(search.matching(Email.objects.all(), "offer", [account.pk])) == set(wanted)
    found = search.found(Email.objects.all(), "offer", [account.pk])
    newest_first = sorted(wanted, key=lambda email: (email.sent_at, email.pk), reverse=True)
    assert found.ids == [email.pk for email in newest_first]
    emails = {email.pk: email for email in found[0:4]}
    assert str(emails[wanted[0].pk].subject_html) == "Quarterly <mark>offer</mark>"
    assert "<mark>OFFER</mark>" in str(emails[wanted[1].pk].snippet_html)
    # lower() makes "İ" two characters: the marks stay on what matched all the same.
    body = "İİİİ " * 40 + "the offer"
    assert search._snippet(body, "offer").endswith("the <mark>offer</mark>".replace(
        "<mark>", search.START).replace("</mark>", search.STOP))  # fmt: skip
    # "…" only where the body goes on.
    assert search._snippet(body + " is fine", "offer").endswith(f"{search.STOP} is fine")
    assert search._snippet(body + "x" * 200, "offer").endswith("x …")


@pytest.mark.django_db(transaction=True)
def test_it_gives_existing_emails_their_vector_in_the_migration():
    from django.db.migrations.executor import MigrationExecutor

    account = EmailAccountFactory()
    executor = MigrationExecutor(connection)
    executor.migrate([("sync", "0016_download_progress")])
    try:
        with connection.cursor() as cursor:
            # An email stored before search existed: no trigger, no vector column.
            cursor.execute(
                "INSERT INTO sync_email (account_id, message_key, content_key, message_id, "
                'subject, from_address, from_name, "to", cc, text_body, html_body, size, '
                'seen, in_reply_to, "references", problem, notes, original, created_at) '
                "VALUES (%s, 'old', '', '', 'Pallet shipment', 'a@b.test', '', '[]', '[]', "
                "'the freight left', '', 0, false, '', '', '', '', '', now())",
                [account.pk],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    email = Email.objects.get(message_key="old")
    found = search.matching(Email.objects.all(), "freight", [account.pk])
    assert list(found) == [email]


def _vector(email) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT search::text FROM sync_email WHERE id = %s", [email.pk])
        return cursor.fetchone()[0]


def test_it_fills_later_the_vectors_the_bulk_store_leaves_and_finds_those_emails_meanwhile(
    client, db
):
    account = EmailAccountFactory(message_language="de")
    with transaction.atomic(), search.vectors_later():
        waiting = _email(account, "w1", subject="Lieferung Pumpen", text_body="die Turbinen")
    written = _email(account, "w2", subject="Written alone", text_body="Turbinen auch")
    assert _vector(waiting) is None and "'turbin'" in _vector(written)
    assert search.vectors_waiting([account.pk]) == 1
    client.force_login(account.owner)
    # Waiting: found by its subject, not yet by its body; after the ranked ones.
    assert _found(client, "pumpen") == ["Lieferung Pumpen"]
    assert _found(client, "Pumpen lieferung -storniert") == ["Lieferung Pumpen"]
    assert _found(client, "pumpen -lieferung") == []  # as it will be once filled
    page = client.get(reverse("accounts:email"), {"q": "turbinen"}).text
    assert "1 email just downloaded is still being prepared for search" in page
    assert _found(client, "turbinen") == ["Written alone"]
    assert _found(client, "lieferung OR written") == ["Written alone", "Lieferung Pumpen"]

    assert search.vectors_fill() == 1
    # The mailbox's language, as the trigger would have read it.
    assert "'turbin':" in _vector(waiting) and "'liefer':1A" in _vector(waiting)
    assert search.vectors_waiting([account.pk]) == 0
    assert "prepared for search" not in client.get(reverse("accounts:email"), {"q": "x"}).text
    assert sorted(_found(client, "turbinen")) == ["Lieferung Pumpen", "Written alone"]
    assert search.vectors_fill() == 0


def test_it_fills_in_batches_and_hands_over_a_long_backlog(db, django_capture_on_commit_callbacks):
    account = EmailAccountFactory()
    with transaction.atomic(), search.vectors_later():
        for n in range(5):
            _email(account, f"b{n}", subject=f"batch {n}")
    # Out of time after the first batch: a new fill is queued for the rest.
    with django_capture_on_commit_callbacks() as queued:
        assert search.vectors_fill(batch=2, seconds=0) == 2
    assert len(queued) == 1
    assert search.vectors_waiting([account.pk]) == 3
    assert search.vectors_fill(batch=2) == 3
    assert Email.objects.filter(search__isnull=True).count() == 0


def test_it_asks_for_the_vectors_after_a_sync_and_beat_fills_them(synced_mailbox, monkeypatch):
    from django.core.cache import cache

    from sync.services import mailbox_sync

    queued = []
    monkeypatch.setattr(search, "publish_on_commit", lambda task: queued.append(task.name))
    cache.delete(search.FILL_QUEUED_KEY)
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="Invoice 42", body="the flux capacitor"))
    mailbox.append("INBOX", make_message(subject="Invoice 43", body="the flux capacitor"))
    mailbox_sync(account_id=account.pk)
    emails = list(Email.objects.filter(account=account))
    assert len(emails) == 2 and all(_vector(email) is None for email in emails)
    # Once however many batches asked, within FILL_QUEUED_SECONDS, and once as the run
    # ends (its last batches may come after the fill the first one queued).
    assert queued == ["sync.search_vectors", "sync.search_vectors"]
    assert "sync.search_vectors" in {
        entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    tasks.search_vectors.run()
    assert all("'capacitor'" in _vector(email) for email in emails)


def test_it_keeps_the_error_and_the_vectors_of_later_inserts_when_a_deferred_insert_fails(db):
    account = EmailAccountFactory()
    with transaction.atomic():
        # The database refuses something inside the block: that error comes out (not
        # "current transaction is aborted"), and the rest of the transaction is usable.
        with pytest.raises(DataError), search.vectors_later(), connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
        # A Python error inside the block: the setting does not outlive it either.
        with pytest.raises(ValueError), search.vectors_later():
            raise ValueError("not the database")
        after = _email(account, "after", subject="Written after the failures")
    assert "'written'" in _vector(after)


def test_it_names_the_databases_own_refusal_in_the_kept_emails_note(synced_mailbox, monkeypatch):
    from sync import store
    from sync.services import mailbox_sync

    real = store.insert_rows

    def too_long_key(model, columns, rows):
        # The database itself turns the row down (message_key is varchar(500)).
        if model is Email:
            subject, key = columns.index("subject"), columns.index("message_key")
            rows = [
                (*row[:key], "k" * 600, *row[key + 1 :]) if "POISON" in row[subject] else row
                for row in rows
            ]
        return real(model, columns, rows)

    monkeypatch.setattr(store, "insert_rows", too_long_key)
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="fine"), make_message(subject="POISON"))
    mailbox_sync(account_id=account.pk)
    kept = Email.objects.get(account=account, subject="POISON")
    assert kept.problem == Email.Problem.UNREADABLE
    assert "StringDataRightTruncation" in kept.notes, kept.notes
    assert "transaction is aborted" not in kept.notes
    assert Email.objects.get(account=account, subject="fine").problem == ""


def test_it_reads_only_the_users_waiting_emails_while_another_mailbox_waits(db):
    mine, other = EmailAccountFactory(), EmailAccountFactory()
    Email.objects.bulk_create(
        Email(account=mine, message_key=f"m{n}", subject=f"Filled {n}") for n in range(300)
    )
    with transaction.atomic(), search.vectors_later():
        _email(mine, "mine", subject="Pumpen")
        Email.objects.bulk_create(
            Email(account=other, message_key=f"o{n}", subject=f"Backlog {n}") for n in range(300)
        )
    assert search.vectors_waiting([mine.pk]) == 1
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ANALYZE sync_email")
        cursor.execute("SET LOCAL enable_seqscan = off")
        waiting = Email.objects.filter(account_id__in=[mine.pk], search__isnull=True)
        plan = waiting.order_by()[:10].explain()
    # The index of waiting emails by mailbox (sync 0019), not every mailbox's backlog
    # (EXPLAIN at 150,000 waiting in another mailbox: a search 5 ms instead of 100).
    assert "email_search_pending_account" in plan, plan


def test_it_counts_the_waiting_emails_of_the_users_mailboxes_by_their_ids(client, db):
    from django.test.utils import CaptureQueriesContext

    account = EmailAccountFactory()
    with transaction.atomic(), search.vectors_later():
        _email(account, "w", subject="Waiting")
    client.force_login(account.owner)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(reverse("accounts:email"), {"q": "waiting"}).text
    assert "1 email just downloaded is still being prepared for search" in page
    (counted,) = [q["sql"] for q in queries if 'WHERE ("sync_email"."search" IS NULL' in q["sql"]]
    # The ids themselves: with a subquery the planner read every mailbox's backlog.
    assert "SELECT" not in counted.split("IS NULL", 1)[1], counted


def test_it_asks_for_the_vectors_as_a_run_ends_though_a_batch_asked_just_before(
    synced_mailbox, monkeypatch
):
    from django.core.cache import cache

    from sync.services import mailbox_sync

    queued = []
    monkeypatch.setattr(search, "publish_on_commit", lambda task: queued.append(task.name))
    # A batch of an earlier run asked a moment ago, and that fill is done: this run's
    # batches are within FILL_QUEUED_SECONDS of it.
    cache.set(search.FILL_QUEUED_KEY, True, search.FILL_QUEUED_SECONDS)
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="Late batch", body="the flux capacitor"))
    mailbox_sync(account_id=account.pk)
    assert queued == ["sync.search_vectors"]  # not left to beat's fill, a minute later
    queued.clear()
    mailbox_sync(account_id=account.pk)
    assert queued == []  # nothing new, nothing asked


def test_it_fills_past_an_email_whose_vector_the_database_refuses(db):
    account = EmailAccountFactory()
    with transaction.atomic(), search.vectors_later():
        before = _email(account, "p1", subject="Before it", text_body="alpha")
        poison = _email(account, "p2", subject="Poison pill", text_body="beta",
                        from_address="mallory@evil.test")  # fmt: skip
        after = _email(account, "p3", subject="After it", text_body="gamma")
    with connection.cursor() as cursor:
        # The database refusing one email's vector (rolled back with the test).
        cursor.execute("ALTER FUNCTION sync_email_vector(regconfig, text, text, text, jsonb, "
                       "jsonb, text, text) RENAME TO sync_email_vector_real")  # fmt: skip
        cursor.execute("""
            CREATE FUNCTION sync_email_vector(cfg regconfig, subject text, a text, b text,
              c jsonb, d jsonb, e text, f text) RETURNS tsvector AS $$
            BEGIN
              IF subject = 'Poison pill' THEN RAISE EXCEPTION 'refused'; END IF;
              RETURN sync_email_vector_real(cfg, subject, a, b, c, d, e, f);
            END $$ LANGUAGE plpgsql""")
    assert search.vectors_fill() == 3
    assert "'alpha'" in _vector(before) and "'gamma'" in _vector(after)
    # The refused one: found by its subject and sender, not lost, not waiting forever.
    assert _vector(poison) == "'mallory@evil.test':3B 'pill':2A 'poison':1A"
    assert search.vectors_waiting([account.pk]) == 0


def test_it_fails_loudly_when_the_database_refuses_every_vector(db):
    account = EmailAccountFactory()
    with transaction.atomic(), search.vectors_later():
        for n in range(3):
            _email(account, f"q{n}", subject=f"Email {n}")
    with connection.cursor() as cursor:
        cursor.execute("DROP FUNCTION sync_email_vector(regconfig, text, text, text, jsonb, "
                       "jsonb, text, text) CASCADE")  # fmt: skip
    with pytest.raises(ProgrammingError):
        search.vectors_fill()


@pytest.mark.django_db(transaction=True)
def test_it_asks_for_the_deferred_vectors_inside_a_transaction_only():
    # Outside one, the savepoint that keeps the setting local would not hold it.
    with pytest.raises(RuntimeError), search.vectors_later():
        pass
    with transaction.atomic(), search.vectors_later():
        pass


def test_it_turns_vectors_later_off_again_after_a_nested_block(db):
    account = EmailAccountFactory()
    with transaction.atomic():
        with search.vectors_later():
            with search.vectors_later():
                pass
            # Still on for the rest of the outer block.
            inside = _email(account, "inside", subject="Capacitor inside")
        after = _email(account, "after", subject="Written after the block")
    assert _vector(inside) is None
    assert "'written'" in _vector(after)


def test_it_searches_a_timeline_in_the_language_of_every_mailbox_it_shows(client, db):
    from accounts.models import EmailAccount
    from sending.models import OutgoingEmail
    from sharing.selectors import mailboxes_on_timelines
    from tests.factories import MailboxGrantFactory

    user = EmailAccountFactory(message_language="de").owner
    own = EmailAccount.objects.get(owner=user)
    # A mailbox the user may only send from: on their timelines only what they wrote.
    sent_from = EmailAccountFactory(message_language="fr", shared_access=True)
    MailboxGrantFactory(account=sent_from, user=user, can_send=True)
    ann = Contact.objects.create(name="Ann")
    mine = _email(own, "de", subject="Ihre Rechnungen vom März")
    written = _email(sent_from, "fr", subject="Livraison rapide")
    OutgoingEmail.objects.create(
        account=sent_from, author=user, message_id="w@x", raw=b"", subject=written.subject,
        state=OutgoingEmail.State.SENT, email=written,
    )  # fmt: skip
    for email in (mine, written):
        email.contacts.add(ann)
    assert mailboxes_on_timelines(user) == sorted([own.pk, sent_from.pk])
    client.force_login(user)
    url = reverse("crm:contact", args=[ann.pk])
    assert "Ihre Rechnungen" in client.get(url, {"q": "rechnung"}).text
    # Only French stems "rapidement" as "rapide" ('rapid'): German and 'simple' keep it
    # whole, so this finds the email only if the French mailbox's language is asked.
    assert "Livraison rapide" in client.get(url, {"q": "rapidement"}).text


def test_it_counts_the_waiting_emails_of_a_mailbox_shared_for_access_on_a_timeline(client, db):
    from tests.factories import MailboxGrantFactory, UserFactory

    user = UserFactory()
    shared = EmailAccountFactory(shared_access=True)
    MailboxGrantFactory(account=shared, user=user, can_access=True)
    ann = Contact.objects.create(name="Ann")
    with transaction.atomic(), search.vectors_later():
        waiting = _email(shared, "sw", subject="Pumps", text_body="the turbines")
    waiting.contacts.add(ann)
    client.force_login(user)
    page = client.get(reverse("crm:contact", args=[ann.pk]), {"q": "turbines"}).text
    # The Email page leaves an "Access emails" mailbox out; the timeline shows it.
    assert "1 email just downloaded is still being prepared for search" in page


def test_it_leaves_out_a_minus_word_in_every_language_searched(client, db):
    # The query is one websearch per language, ORed ('english' | 'simple'); the
    # 'simple' half of "report -invoices", 'report' & !'invoices', is true of an English
    # vector, which holds 'invoic': the -word left nothing out.
    account = EmailAccountFactory(message_language="en")
    _email(account, "a", subject="Quarterly report", text_body="the invoices are attached")
    _email(account, "b", subject="Quarterly report", text_body="nothing else")
    _email(account, "c", subject="Running late", text_body="see you")
    contact = Contact.objects.create(name="Ann")
    for email in Email.objects.all():
        email.contacts.add(contact)
    client.force_login(account.owner)
    mine = Email.objects.filter(account=account)
    found = search.found(mine, "report -invoices", [account.pk])
    assert set(mine.filter(pk__in=found.ids).values_list("message_key", flat=True)) == {"b"}
    for url in (reverse("accounts:email"), reverse("crm:contact", args=[contact.pk])):
        assert _found_at(client, url, "report -invoices") == ["Quarterly report"], url
        assert "Running late" not in _found_at(client, url, "-running"), url
        # A -"phrase" leaves out only the emails holding it as a phrase.
        assert _found_at(client, url, 'report -"invoices are"') == ["Quarterly report"], url
        assert len(_found_at(client, url, 'report -"invoices nothing"')) == 2, url


def test_it_leaves_a_minus_word_out_of_its_own_group_with_or(client, db):
    # "report -invoices or late": websearch's reading, (report without invoices) or
    # late, ORed per language; the 'simple' half's !'invoices' was true of an English
    # vector holding 'invoic', so "report" came with its invoices.
    account = EmailAccountFactory(message_language="en")
    _email(account, "a", subject="Quarterly report", text_body="the invoices are attached")
    _email(account, "bb", subject="Yearly report", text_body="nothing else")
    _email(account, "ccc", subject="Running late", text_body="the invoices follow")
    _email(account, "dddd", subject="Lunch", text_body="unrelated")
    with transaction.atomic(), search.vectors_later():  # found by their subjects
        _email(account, "eeeee", subject="Waiting report", text_body="the invoices")
        _email(account, "ffffff", subject="Waiting late invoices", text_body="")
    contact = Contact.objects.create(name="Ann")
    for email in Email.objects.all():
        email.contacts.add(contact)
    client.force_login(account.owner)
    mine = Email.objects.filter(account=account)
    found = search.found(mine, "report -invoices or late", [account.pk])
    keys = set(mine.filter(pk__in=found.ids).values_list("message_key", flat=True))
    assert keys == {"bb", "ccc", "eeeee", "ffffff"}
    for url in (reverse("accounts:email"), reverse("crm:contact", args=[contact.pk])):
        assert set(_found_at(client, url, "report -invoices or late")) == {
            "Yearly report", "Running late", "Waiting report", "Waiting late invoices",
        }, url  # fmt: skip
        assert set(_found_at(client, url, "late -invoices or report")) == {
            "Quarterly report", "Yearly report", "Waiting report",
        }, url  # fmt: skip
        # A word again in another group keeps its part there.
        assert set(_found_at(client, url, "report -invoices or late -invoices")) == {
            "Yearly report", "Waiting report",  # the latter by its subject alone
        }, url  # fmt: skip
        # The -word of one group, a wanted word of the other.
        assert set(_found_at(client, url, "lunch -invoices or invoices attached")) == {
            "Lunch", "Quarterly report",
        }, url  # fmt: skip


def test_it_looks_for_a_weak_part_of_the_sender_by_date_not_by_its_trigrams(client, db):
    # pg_trgm reads words of letters and digits only. A text with fewer than two full
    # trigrams (".com": "com"; "o'b": "  b") is held by most senders' trigrams: a LIKE
    # matching none rechecked all 300,000 emails. It walks the date index instead.
    account = EmailAccountFactory()
    _email(account, "a", subject="Hello", from_name="Pat O'Brien ...", from_address="p@x.test")
    _email(account, "b", subject="Numbers", from_name="Desk +49", from_address="d@y.test")
    _email(account, "c", subject="Plant", from_name="Ingrid Bergström", from_address="i@z.com")
    client.force_login(account.owner)
    assert _found(client, "...") == []  # no letter: no sender
    assert _found(client, "o'b") == ["Hello"]
    assert _found(client, "esk +4") == ["Numbers"]  # no word of it is one of the sender's
    assert _found(client, ".com") == ["Plant"]
    assert _found(client, "ergstr") == ["Plant"]

    def sql(text):
        query = search.search_query(text, [account.pk])
        condition = search._condition(text, query, ["simple"])
        return str(Email.objects.filter(condition).values("pk").query)

    for text in ("o'b", ".com", "esk +4", "x²a", "a ⅧⅧ"):
        assert "sender_upper\" || '')" in sql(text), text
    assert 'sender_upper"::text LIKE' in sql("ergstr")
    for text in ("...", "²²²", "-- "):
        assert "sender_upper" not in sql(text), text


def test_it_reads_a_text_as_websearch_does_where_the_groups_would_not(client, db):
    # A quote inside a word opens a phrase for websearch ('12" pipe or tube -steel':
    # '12' & 'pipe' <-> 'or' <-> 'tube' <-> 'steel'); cut at "or", "tube" alone was found.
    account = EmailAccountFactory(message_language="en")
    _email(account, "a", subject="12 pipe or tube steel")
    _email(account, "b", subject="Tube delivery")
    _email(account, "c", subject="Pump", text_body="the pump is late")
    _email(account, "d", subject="Pump offer", text_body="see the offer")
    client.force_login(account.owner)
    assert _found(client, '12" pipe or tube -steel') == ["12 pipe or tube steel"]
    # "report -x or, late": "or," is "or" to websearch.
    assert set(_found(client, "offer -pump or, late")) == {"Pump"}
    # A lone "-" leaves out the next word, as websearch reads it.
    assert _found(client, "pump - late") == ["Pump offer"]
    assert search._plain_groups("pump - late") == [(["pump"], [["late"]])]
    assert search._plain_groups('a - "b c" or d') == [(["a"], [["b", "c"]]), (["d"], [])]


def test_it_searches_each_or_group_s_words_once(db):
    assert search.searched("report -invoices or summary -invoices") == (
        "report -invoices or summary -invoices"
    )
    assert search.searched("invoice late or invoice overdue") == "invoice late or invoice overdue"
    assert search.searched("a a or a") == "a or a"


def test_it_marks_no_word_of_a_phrase_left_out(client, db):
    # 'report -"invoices nothing"': "nothing" is left out (as a phrase with
    # "invoices"), not a word found: marked in a snippet, it showed as what matched.
    account = EmailAccountFactory(message_language="en")
    _email(account, "b", subject="Quarterly report", text_body="report done, nothing else")
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email"), {"q": 'report -"invoices nothing"'}).text
    assert _found_at(client, reverse("accounts:email"), 'report -"invoices nothing"') == [
        "Quarterly report"
    ]
    assert "<mark>report</mark> done" in page and "<mark>nothing" not in page


def test_it_searches_a_timeline_s_meetings_and_tasks_word_by_word(client, db):
    account = EmailAccountFactory()
    ann = Contact.objects.create(name="Ann")
    subjects = ["Delivery of the pump", "Pump review", "Lunch with Ann"]
    for n, subject in enumerate(subjects):
        meeting = Activity.objects.create(
            account=account, kind="meeting", external_id=f"m{n}", subject=subject,
            starts_at=NOW - timedelta(days=n),
        )  # fmt: skip
        meeting.contacts.add(ann)
    task = Activity.objects.create(
        account=account, kind="task", external_id="t", subject="Call about the PUMPS",
        due_on=NOW.date(),
    )  # fmt: skip
    task.contacts.add(ann)
    client.force_login(account.owner)
    url = reverse("crm:contact", args=[ann.pk])

    def found(text):
        page = client.get(url, {"q": text}).text
        return {subject for subject in [*subjects, "Call about the PUMPS"] if subject in page}

    assert found("pump delivery") == {"Delivery of the pump"}
    assert found("pump - delivery") == {"Pump review", "Call about the PUMPS"}
    assert found("or") == set()  # no word: nothing, as on the Email page
    assert found("pump -delivery") == {"Pump review", "Call about the PUMPS"}
    assert found("delivery or lunch") == {"Delivery of the pump", "Lunch with Ann"}
    assert found('"the pump"') == {"Delivery of the pump", "Call about the PUMPS"}


def test_it_marks_only_what_was_found_though_an_email_holds_the_markers(client, db):
    # An email's own U+E000/U+E001, the highlights' markers, read as marks: text that
    # matched nothing showed as found, and the body's part was the one holding a marker.
    account = EmailAccountFactory(message_language="en")
    _email(
        account, "m", subject="Status \ue000 all green \ue001 pumps",
        text_body="intro \ue000 fake " + "filler " * 600 + "the pumps arrived",
    )  # fmt: skip
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email"), {"q": "pumps"}).text
    marked = re.findall(r"<mark>(.*?)</mark>", page, re.S)
    assert marked and all(mark.strip().lower() == "pumps" for mark in marked), marked
    assert "the <mark>pumps</mark> arrived" in page


def test_it_searches_the_first_words_of_a_long_search_once_each():
    assert search.searched("invoice " * 16) == "invoice"
    assert search.searched("Invoice invoice INVOICE report") == "Invoice report"
    words = " or ".join(f"w{n}" for n in range(40))
    assert search.searched(words) == " or ".join(f"w{n}" for n in range(search.MAX_WORDS))
    assert search.searched("  a   b ") == "a b"


def test_it_finds_with_a_long_search_what_its_first_words_find(client, db):
    account = EmailAccountFactory()
    _email(account, "a", subject="pallet warranty claim")
    client.force_login(account.owner)
    typed = (
        "pallet warranty " + " ".join(["pallet"] * 30) + " " + " ".join(f"x{n}" for n in range(20))
    )
    assert _found(client, typed) == []  # the first eight words: pallet, warranty, x0-x5
    assert search.searched("pallet " * 20 + "warranty") == "pallet warranty"
    assert _found(client, "pallet " * 20 + "warranty") == ["pallet warranty claim"]


def _found_at(client, url, query) -> list[str]:
    page = client.get(url, {"q": query}).text
    return [
        re.sub("</?mark>", "", subject)
        for subject in re.findall(r'href="/emails/\d+/">(.*?)</a>', page, re.S)
    ]

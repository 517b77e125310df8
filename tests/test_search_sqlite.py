"""Search on SQLite, the embedded default (`make run`): every word typed, in any case of
any alphabet, recipients by their names; and what a search box takes on either
database (a NUL, markers an email holds)."""

import json
import os
import subprocess
import sys

import pytest
from django.urls import reverse

from crm.models import Company, Contact
from mailsetup.settings import BASE_DIR
from mailsetup.sqlite import like, people
from sync import search
from sync.models import Email
from tests.factories import EmailAccountFactory, UserFactory


def test_it_finds_on_sqlite_what_a_user_types_in_any_case_and_word_order(tmp_path):
    env = {
        **os.environ, "DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MAILSETUP_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "mailsetup.settings",
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "tests.sqlite_search"], cwd=BASE_DIR, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["email_page"] == {
        # Case beyond ASCII (SQLite's own LIKE folds A-Z only).
        "müller": ["Anfrage von MÜLLER GmbH"],
        "åsa": ["Åsa bokning"],
        "σοφια": ["ΣΟΦΙΑ"],
        # Recipients by their names, not by the JSON around them.
        "Jürgen": ["Hello"],
        "schäfer": ["Hello"],
        "name": [],
        "address": [],
        # Every word, anywhere, in any order; -word left out; "or" between words.
        "warranty pallet": ["pallet warranty"],
        "turbine order": ["Notes"],
        '"pallet warranty"': ["pallet warranty"],
        "bar -foo": ["only bar"],
        "pallet or turbine": ["pallet warranty", "Notes"],
        # LIKE's wildcards, typed, are only themselves.
        "50%": [],
        "_": [],
    }
    assert found["marked"] == ["Anfrage von <mark>MÜLLER</mark> GmbH"]
    assert found["timeline"] == {"ärger": True, "lieferung ärger": True, "foo": False}
    assert found["contacts"] == {"özil": True, "ÖZIL": True, "zz": False}


def test_it_matches_like_patterns_in_any_case_as_sql_does():
    assert like("%müller%", "Anfrage von MÜLLER GmbH", "\\") == 1
    assert like("%σοφια%", "ΣΟΦΙΑ") == 1
    assert like("hello", "Hello") == 1 and like("hello", "Hello!") == 0
    assert like("a_c", "aBc") == 1 and like("a_c", "abbc") == 0
    assert like("a%c", "a\nlong\nc") == 1
    # Escaped wildcards are themselves.
    assert like("a\\%c", "a%c", "\\") == 1 and like("a\\%c", "abc", "\\") == 0
    assert like("%\\_%", "a_b", "\\") == 1 and like("%\\_%", "ab", "\\") == 0
    assert like("%50\\%%", "up 50% off", "\\") == 1 and like("%50\\%%", "up 50 off", "\\") == 0
    # NULL is NULL; numbers and bytes are read as text, as SQLite does.
    assert like("%x%", None) is None and like(None, "x") is None
    assert like("%2%", 12) == 1 and like("%é%", "é".encode()) == 1


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("ΟΔΥΣ", "ΟΔΥΣΣΕΑΣ"),  # lower() made the typed Σ a final ς
        ("κωστασ", "ΚΩΣΤΑΣ"),
        ("k\u0131l\u0131ç", "KILIÇ"),  # a Turkish dotless i
        ("\u00b5g", "\u039cG"),  # the micro sign, a capital mu
    ],
)
def test_it_reads_case_as_postgresqls_upper_does(typed, stored):
    assert like(f"%{typed}%", stored, "\\") == 1


def test_it_matches_a_pattern_of_many_wildcards_in_one_pass():
    # Read as a backtracking expression, each of these took seconds to minutes.
    assert like("%a%a%a%a%b", "a" * 300) == 0
    assert like("%%%%%%a%b", "x" * 300) == 0
    assert like("%a%a%a%a%b", "a" * 300 + "b") == 1


def test_it_reads_the_escape_character_as_sqlite_does():
    assert like("a\\", "a\\", "\\") == 0  # an escape with nothing after matches nothing
    with pytest.raises(ValueError, match="single character"):
        like("a", "a", "ab")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # As websearch: ('alpha' & 'beta') | 'gamma'; 'alpha' | ('beta' & 'gamma').
        ("alpha beta or gamma", {"alpha beta", "gamma", "beta gamma"}),
        ("alpha or beta gamma", {"alpha", "alpha beta", "beta gamma"}),
        ('"beta or gamma"', {"beta gamma"}),  # inside quotes, "or" is a word
        ("-alpha", {"beta", "gamma", "beta gamma"}),
        ('beta -"beta gamma"', {"beta", "alpha beta"}),
        ('beta -"gamma beta"', {"beta", "alpha beta"}),
    ],
)
def test_it_reads_or_and_minus_as_websearch_does(db, monkeypatch, text, found):
    monkeypatch.setattr(search, "postgres", lambda: False)
    account = EmailAccountFactory()
    for number, subject in enumerate(["alpha", "beta", "gamma", "alpha beta", "beta gamma"]):
        Email.objects.create(account=account, message_key=f"k{number}", subject=subject)
    if text == '"beta or gamma"':
        Email.objects.filter(subject="beta gamma").update(subject="beta or gamma")
        found = {"beta or gamma"}
    listed = Email.objects.filter(search._plain_condition(text))
    assert set(listed.values_list("subject", flat=True)) == found


def test_it_reads_recipients_names_and_addresses_from_their_json():
    assert people('[{"name": "J\\u00fcrgen", "address": "j@x.test"}, {"address": "a@b"}]') == (
        "Jürgen j@x.test  a@b"
    )
    assert people("") == "" and people(None) == ""
    assert people("not json") == "not json" and people('{"name": "x"}') == ""


def test_it_labels_the_pages_of_results_by_their_order(client, db, monkeypatch):
    account = EmailAccountFactory()
    for number in range(55):
        Email.objects.create(account=account, message_key=f"k{number}", subject=f"offer {number}")
    client.force_login(account.owner)
    second = client.get(reverse("accounts:email"), {"q": "offer", "page": 2}).text
    assert "Better matches" in second
    monkeypatch.setattr(search, "postgres", lambda: False)
    second = client.get(reverse("accounts:email"), {"q": "offer", "page": 2}).text
    assert "Newer matches" in second and "Better matches" not in second


def test_it_takes_a_nul_in_any_search_box(client, db):
    # Its owner may share it: the people picker is a search box too.
    account = EmailAccountFactory(owner=UserFactory(permissions=["sharing.setup_shared_access"]))
    contact = Contact.objects.create(name="Ann")
    company = Company.objects.create(name="Acme")
    client.force_login(UserFactory(is_staff=True, permissions=["providers.manage_email_providers"]))
    assert client.get(reverse("health:mailboxes"), {"q": "a\x00b"}).status_code == 200
    client.force_login(account.owner)
    for url in (
        reverse("accounts:email"), reverse("crm:contacts"), reverse("crm:companies"),
        reverse("crm:contact", args=[contact.pk]), reverse("crm:company", args=[company.pk]),
    ):  # fmt: skip
        response = client.get(url, {"q": "offer\x00"})
        assert response.status_code == 200, url
        assert "\x00" not in response.text
    # The box that links an email to contacts and companies (its own page, without htmx,
    # sends the browser back to the email's).
    email = Email.objects.create(account=account, message_key="k", subject="offer")
    for url in (
        reverse("sync:email", args=[email.pk]),
        reverse("crm:email_links", args=[email.pk]),
    ):
        assert client.get(url, {"link": "ann\x00"}, follow=True).status_code == 200, url
    htmx = {"HTTP_HX_REQUEST": "true"}
    grantees = reverse("sharing:grantees", args=[account.pk])
    assert client.get(grantees, {"q": "\x00"}, **htmx).status_code == 200


@pytest.mark.parametrize(
    ("text", "html"),
    [
        (f"{search.START}a{search.STOP}", "<mark>a</mark>"),
        # The email's own markers: one that closes nothing, one inside another.
        (f"a {search.STOP}quote{search.STOP}", "a quote"),
        (f"{search.START}{search.START}a{search.STOP}{search.STOP}", "<mark>a</mark>"),
        (f"{search.START}open", "<mark>open</mark>"),
        ("<b>&", "&lt;b&gt;&amp;"),
    ],
)
def test_it_turns_markers_into_balanced_marks(text, html):
    assert str(search._marked(text)) == html

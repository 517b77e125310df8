import unicodedata

import pytest

from providers.addresses import AddressError, normalize_address, normalize_domain


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "Enter an email address"),
        ("   ", "Enter an email address"),
        (None, "Enter an email address"),
        ("anna.example.com", "needs an @"),
        ("anna@@example.com", "exactly one @; this one has 2"),
        ("anna@team@example.com", "exactly one @; this one has 2"),
        ("anna smith@example.com", "cannot contain spaces"),
        ("anna@exa mple.com", "cannot contain spaces"),
        ("anna@example.com.", "cannot end with a dot"),
        ("anna@.example.com", "cannot start with a dot"),
        ("anna@example..com", "two dots in a row"),
        ("@example.com", "Enter the name before the @"),
        ("anna@", "Enter the domain after the @"),
        (".anna@example.com", "cannot start or end with a dot"),
        ("an..na@example.com", "two dots in a row"),
        ("an(na)@example.com", "character that email addresses do not allow"),
        ("anna@localhost", "needs a dot"),
        ("anna@192.168.1.10", "not an IP address"),
        ("anna@[127.0.0.1]", "not an IP address"),
        ("anna@exa_mple.com", "may only hold letters, digits and hyphens"),
        ("anna@-example.com", "may only hold letters, digits and hyphens"),
        ("a" * 65 + "@example.com", "at most 64 characters"),
        ("an\u200bna@example.com", "invisible or control character"),
        ("anna\u202e@example.com", "invisible or control character"),
        ("anna@xn--zz.example", "not a valid international domain name"),
        ("anna@" + "b" * 64 + ".com", "at most 63 characters"),
        ("anna@" + ".".join(["b" * 60] * 5) + ".com", "at most 253 characters"),
        ("a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com", "at most 254 characters"),
    ],
)
def test_it_names_what_is_wrong_with_a_bad_address(raw, message):
    with pytest.raises(AddressError, match=message.replace("(", r"\(").replace(")", r"\)")):
        normalize_address(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Anna@Example.COM", "anna@example.com"),
        ("  anna@example.com\t", "anna@example.com"),
        ("anna@bücher.example", "anna@xn--bcher-kva.example"),
        ("anna@BÜCHER.example", "anna@xn--bcher-kva.example"),
        ("anna@xn--bcher-kva.example", "anna@xn--bcher-kva.example"),
        ("o'brien+crm@mail.example.co.uk", "o'brien+crm@mail.example.co.uk"),
        ("jörg@example.de", "jörg@example.de"),
        ("anna@example\u3002com", "anna@example.com"),
    ],
)
def test_it_normalises_a_good_address(raw, expected):
    assert normalize_address(raw).email == expected


def test_it_splits_the_address_into_local_part_and_domain():
    address = normalize_address("Anna.Smith@Bücher.Example")
    assert (address.local, address.domain) == ("anna.smith", "xn--bcher-kva.example")


def test_it_normalises_a_domain_alone():
    assert normalize_domain(" Mail.Example.ORG ") == "mail.example.org"


def test_it_spells_each_letter_one_way():
    # "jürgen" typed on a Mac (u + a combining diaeresis, NFD) was another mailbox than
    # the same name typed elsewhere (NFC): RFC 6532 3.1 asks for NFC.
    nfd = unicodedata.normalize("NFD", "jürgen@example.com")
    assert nfd != "jürgen@example.com"
    assert normalize_address(nfd).email == "jürgen@example.com"


def test_it_rewrites_stored_addresses_in_nfc(db):
    # Stored before addresses were kept in NFC: typed again, not found, and added twice.
    from importlib import import_module

    from django.apps import apps

    from accounts.models import EmailAccount
    from tests.factories import EmailAccountFactory

    nfd = unicodedata.normalize("NFD", "jürgen@example.test")
    alone = EmailAccountFactory(address=nfd)
    pair = EmailAccountFactory(address=nfd)
    both = EmailAccountFactory(owner=pair.owner, address="jürgen@example.test")
    import_module("accounts.migrations.0010_addresses_in_nfc").forwards(apps, None)
    addresses = dict(EmailAccount.objects.values_list("pk", "address"))
    assert addresses[alone.pk] == "jürgen@example.test"
    # One owner with both spellings: both kept, for a person to look at.
    assert (addresses[pair.pk], addresses[both.pk]) == (nfd, "jürgen@example.test")


def test_it_refuses_a_lone_surrogate():
    # A JSON claim can hold one ("an\\ud800na@"): encoding it was a 500.
    with pytest.raises(AddressError):
        normalize_address("an\ud800na@example.test")

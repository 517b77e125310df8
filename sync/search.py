"""Searching emails (issue 19).

On PostgreSQL: full-text search with django.contrib.postgres.search over a stored
search vector (`Email.search`, a GIN index), written by a trigger on every insert or
change of the columns it reads (migration sync 0018), so every path that writes an
email (the IMAP store, Exchange, the sending app, the admin, the tests' factories) keeps
it up to date with no code of its own. Weights: subject A, sender B, recipients C, body
text D. Subject and body are read with the text search configuration of the mailbox's
message language (`config_for`), names and addresses with 'simple'. Addresses and
partial names are also found by `icontains`, served by trigram indexes (pg_trgm).

On SQLite (the embedded default) a plain `icontains` over the same columns: slower, and
not ranked, but it finds the same emails a user would look for.
"""

import html
from functools import reduce
from operator import or_

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank
from django.db import connection
from django.db.models import F, Func, Q, QuerySet, TextField
from django.db.models.functions import Left
from django.utils.safestring import SafeString, mark_safe

# The message languages (settings.LANGUAGES codes, before any "-") that have a
# PostgreSQL text search configuration; any other reads as 'simple' (no stemming, no
# stop words: still correct, only less forgiving). The same table is in the database's
# sync_search_config() (migration sync 0018; tests/test_search.py checks they agree).
CONFIGS = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "da": "danish",
    "nl": "dutch", "en": "english", "fi": "finnish", "fr": "french", "de": "german",
    "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish",
    "it": "italian", "lt": "lithuanian", "ne": "nepali", "nb": "norwegian",
    "no": "norwegian", "nn": "norwegian", "pt": "portuguese", "ro": "romanian",
    "ru": "russian", "sr": "serbian", "es": "spanish", "sv": "swedish", "ta": "tamil",
    "tr": "turkish", "yi": "yiddish",
}  # fmt: skip

# Ranking every match of a common word costs as much as the matches; the newest this
# many are ranked, which is what a person pages through.
RANKED = 1_000
# Trigram indexes serve a substring of three characters or more.
TRIGRAM_MIN = 3
# What a headline shows of the body.
HEADLINE_SOURCE = 20_000
# Private-use characters mark the highlights, so that everything else can be escaped.
START, STOP = "\ue000", "\ue001"


def config_for(language: str) -> str:
    return CONFIGS.get((language or "").lower().split("-", 1)[0], "simple")


def postgres() -> bool:
    return connection.vendor == "postgresql"


def _configs(mailboxes) -> list[str]:
    from accounts.models import EmailAccount

    languages = EmailAccount.objects.filter(pk__in=mailboxes).values_list(
        "message_language", flat=True
    )
    return sorted({"simple"} | {config_for(language) for language in set(languages)})


def search_query(text: str, mailboxes) -> SearchQuery:
    """What was typed, as a query in each language the mailboxes' emails were indexed
    in (one tsquery, ORed, so the GIN index serves it)."""
    return reduce(
        or_, [SearchQuery(text, config=c, search_type="websearch") for c in _configs(mailboxes)]
    )


def matching(emails: QuerySet, text: str, mailboxes) -> QuerySet:
    """The emails matching `text`: its words anywhere (ranked), or a part of the
    sender's address or name. On PostgreSQL with `rank`, the newest RANKED matches."""
    text = " ".join(text.split())
    if not text:
        return emails
    if not postgres():
        return emails.filter(
            Q(subject__icontains=text)
            | Q(from_address__icontains=text)
            | Q(from_name__icontains=text)
            | Q(to__icontains=text)
            | Q(cc__icontains=text)
            | Q(text_body__icontains=text)
        )
    query = search_query(text, mailboxes)
    condition = Q(search=query)
    if len(text) >= TRIGRAM_MIN:
        condition |= Q(from_address__icontains=text) | Q(from_name__icontains=text)
    newest = emails.filter(condition).order_by("-sent_at", "-pk").values("pk")[:RANKED]
    return emails.filter(pk__in=newest).annotate(rank=SearchRank(F("search"), query))


def ranked(emails: QuerySet) -> QuerySet:
    """Search results in order: best first, then newest (PostgreSQL); newest on SQLite."""
    if postgres() and "rank" in emails.query.annotations:
        return emails.order_by("-rank", F("sent_at").desc(nulls_last=True), "-pk")
    return emails


class SearchConfigOf(Func):
    """The text search configuration of a message language, in the database."""

    function = "sync_search_config"
    output_field = TextField()


def highlight(emails: list, text: str, mailboxes) -> None:
    """Set `subject_html` and `snippet_html` on a page of matching emails: escaped text
    with the matched words in <mark>. One query for the page."""
    text = " ".join(text.split())
    if not emails or not text:
        return
    from .models import Email

    if postgres():
        query = search_query(text, mailboxes)
        config = SearchConfigOf(F("account__message_language"))
        options = {"start_sel": START, "stop_sel": STOP, "config": config}
        rows = Email.objects.filter(pk__in=[email.pk for email in emails]).annotate(
            subject_hl=SearchHeadline("subject", query, highlight_all=True, **options),
            body_hl=SearchHeadline(
                Left("text_body", HEADLINE_SOURCE), query, max_words=30, min_words=12,
                max_fragments=2, fragment_delimiter=" … ", **options,
            ),
        )  # fmt: skip
        found = {pk: (s, b) for pk, s, b in rows.values_list("pk", "subject_hl", "body_hl")}
        for email in emails:
            subject, body = found.get(email.pk, (email.subject, ""))
            email.subject_html = _marked(subject)
            email.snippet_html = _marked(body) if START in (body or "") else ""
        return
    bodies = dict(
        Email.objects.filter(pk__in=[email.pk for email in emails]).values_list("pk", "text_body")
    )
    for email in emails:
        email.subject_html = _marked(_mark_plain(email.subject, text))
        email.snippet_html = _marked(_snippet(bodies.get(email.pk, ""), text))


def _marked(text: str | None) -> SafeString:
    """Escape everything, then turn the markers into <mark>. A marker the email itself
    held becomes a harmless <mark> too; one left open is closed at the end."""
    escaped = html.escape(text or "")
    opened = escaped.count(START) - escaped.count(STOP)
    escaped = escaped.replace(START, "<mark>").replace(STOP, "</mark>")
    return mark_safe(escaped + "</mark>" * max(0, opened))  # noqa: S308 - escaped above


def _mark_plain(text: str, term: str) -> str:
    """SQLite: the term marked wherever it occurs (any case), our markers removed from
    the source first."""
    text = (text or "").replace(START, "").replace(STOP, "")
    if not term:
        return text
    lowered, needle, out, at = text.lower(), term.lower(), [], 0
    while (found := lowered.find(needle, at)) != -1:
        out += [text[at:found], START, text[found : found + len(needle)], STOP]
        at = found + len(needle)
    return "".join(out) + text[at:]


def _snippet(body: str, term: str, width: int = 120) -> str:
    at = (body or "").lower().find(term.lower())
    if at == -1:
        return ""
    start = max(0, at - width)
    piece = body[start : at + len(term) + width]
    return ("… " if start else "") + _mark_plain(piece, term) + " …"

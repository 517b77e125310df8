"""Searching emails (issue 19).

On PostgreSQL: full-text search with django.contrib.postgres.search over a stored
search vector (`Email.search`, a GIN index), computed in the database by one function
(sync_email_vector, migration sync 0018). A trigger computes it for every email written
one at a time (the sending app, an unreadable message's row, the admin, the tests'
factories) and for every change of the columns it reads, with no code of their own. The
store's bulk insert (IMAP and Exchange) asks for it later (`vectors_later`): computing
it there halved a first sync (B1), and `vectors_fill`, a task queued after each batch
and by beat every minute, fills it in batches beside the download. Until then the email
is found by its subject and sender.

Weights: subject A, sender B, recipients C, body text D. Subject and body are read
with the text search configuration of the mailbox's message language (`config_for`),
names and addresses with 'simple'. Addresses and partial names are also found by
`icontains`, served by trigram indexes (pg_trgm).

On SQLite (the embedded default) every word typed (`_plain_groups`: an "or" between
words, a -word left out, as websearch reads them) found anywhere in the subject, the
sender, the recipients' names and addresses, or the body, in any case of any alphabet
(SQLite's LIKE is replaced for that: mailsetup/sqlite.py): slower, newest first and not
ranked, but it finds the emails a user would look for, each word marked.
"""

import html
import itertools
import logging
import re
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from functools import reduce
from operator import and_, or_

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank
from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.db import (
    DataError,
    Error,
    InternalError,
    ProgrammingError,
    connection,
    transaction,
)
from django.db.models import Case, DateTimeField, F, Func, Q, QuerySet, TextField, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Left, Upper
from django.db.models.lookups import Contains, IContains
from django.utils.safestring import SafeString, mark_safe

from mailsetup.lookups import AnyOf
from mailsetup.queue import publish_on_commit

logger = logging.getLogger(__name__)

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
# How many words of a search are searched (`searched`).
MAX_WORDS = 8
# vectors_fill: emails per transaction, and how long one task fills before it hands
# over to a new one (so that a long backlog never holds a worker).
FILL_BATCH = 200
FILL_SECONDS = 20.0
# At most one fill is queued per process in this many seconds (the store asks after
# every batch it commits).
FILL_QUEUED_KEY, FILL_QUEUED_SECONDS = "sync:search-vectors-queued", 10
# Private-use characters mark the highlights, so that everything else can be escaped.
START, STOP = "\ue000", "\ue001"
# A body's headline (sync_body_headline, migration sync 0024): at most 30 words around
# the words found, in 2 fragments at most, from the body's first 20,000 characters.
BODY_HEADLINE_CHARS = 20_000
BODY_HEADLINE = (
    f"StartSel={START}, StopSel={STOP}, MaxWords=30, MinWords=12, MaxFragments=2,"
    ' FragmentDelimiter=" … "'
)


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


def search_query(text: str, mailboxes, configs: list[str] | None = None) -> SearchQuery:
    """What was typed, as a query in each language the mailboxes' emails were indexed
    in (one tsquery, ORed, so the GIN index serves it); `configs`: those languages'
    configurations, if already read."""
    configs = _configs(mailboxes) if configs is None else configs
    return reduce(or_, [SearchQuery(text, config=c, search_type="websearch") for c in configs])


def searched(text: str) -> str:
    """What of `text` is searched: its words once each in each "or" group (in any
    case), the first MAX_WORDS of them ("or" between them not counted). Every word is a
    term in every language's query, and past a dozen terms PostgreSQL's estimate fails:
    16 common words, or 40 rare ones with "or", walked all 300,000 emails (0.3-0.7 s
    against 10 ms, measured by a review)."""
    kept, seen, count = [], set(), 0
    for word in text.split():
        if word.lower() == "or":
            kept.append(word)
            seen = set()  # a word again after "or" is another group's: "a -x or b -x"
            continue
        if word.lower() in seen:
            continue
        if count == MAX_WORDS:
            break
        seen.add(word.lower())
        count += 1
        kept.append(word)
    while kept and kept[-1].lower() == "or":
        kept.pop()
    return " ".join(kept)


def matching(emails: QuerySet, text: str, mailboxes) -> QuerySet:
    """The emails matching `text` (`searched`): its words anywhere, or a part of the
    sender's address or name; all of them, for a list in date order (the timelines,
    which page them by date). The Email page's search ranks them: `found`."""
    text = searched(text)
    if not text:
        return emails
    if not postgres():
        return emails.filter(_plain_condition(text))
    configs = _configs(mailboxes)
    return emails.filter(_condition(text, search_query(text, mailboxes, configs), configs))


class Found:
    """Search results in order (best first, then newest), at most RANKED, for pages by
    number: sliced and counted as a Paginator does. Their order is known at once, from
    one query; a page's emails are read by id when it is asked for, highlighted
    (`subject_html`, `snippet_html`: escaped, the words found in <mark>) in the same
    query, and the text marked in the sender (`sender_html`) where it is found there.
    `more`: whether more emails match than the RANKED kept. `worded`: those of `ids`
    found by their words (None: all of them), the only ones whose headlines are asked
    for: a match by its sender alone has no word to show, and a headline reads the
    whole body (B6's "bergstr": 50 of them, 9 ms for nothing). `configs`: the text
    search configurations `query` was made in, given with it."""

    def __init__(
        self, emails: QuerySet, ids: list[int], *, mailboxes: list[int], more: bool,
        text: str, query: SearchQuery | None = None, worded: set[int] | None = None,
        configs: list[str] | None = None,
    ):  # fmt: skip
        self.emails, self.ids, self.mailboxes, self.more = emails, ids, mailboxes, more
        self.text, self.query, self.worded = text, query, worded
        self.configs = configs

    @property
    def ranked(self) -> bool:
        """Best first (PostgreSQL); else newest first."""
        return self.query is not None

    def count(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, part):
        if not isinstance(part, slice):
            return self[part : part + 1][0]
        ids = self.ids[part]
        rows = self.emails.order_by().filter(AnyOf(F("pk"), ids))
        worded = ids if self.worded is None else [pk for pk in ids if pk in self.worded]
        if self.query is not None and worded:
            rows = rows.annotate(**_headlines(self.query, self.text, self.configs, worded))
        found = {email.pk: email for email in rows}
        page = [found[pk] for pk in ids if pk in found]
        if self.query is not None:
            for email in page:
                if subject := getattr(email, "subject_hl", None):
                    email.subject_html = _marked(subject)
                body = getattr(email, "body_hl", None) or ""
                email.snippet_html = _marked(body) if START in body else ""
        else:
            _highlight_plain(page, self.text)
        if self.query is None or _by_sender_too(self.text):  # the sender was searched
            # PostgreSQL finds a part of the sender as typed; SQLite each word.
            terms = self.text if self.query is not None else _plain_words(self.text)
            for email in page:
                sender = _mark_plain(email.from_name or email.from_address, terms)
                if START in sender:
                    email.sender_html = _marked(sender)
        return page


def found(emails: QuerySet, text: str, mailboxes: list[int]) -> Found:
    """The emails matching `text` (as `matching`), best first: on PostgreSQL the newest
    RANKED matches ordered by rank, undated and unranked ones (their vector still to
    be filled) after the ranked; on SQLite the newest RANKED, newest first.

    On PostgreSQL in one query of three parts, each served by its own index: the newest
    RANKED + 1 emails with the words (`_words`: the search vector's index, or the date
    index for a common word), and those whose sender matches (`_by_sender`: the
    sender's trigram index for a rare part, else the date index with the sender in it,
    email_sent_sender), dated ones no older than the words' last when the words fill
    the RANKED + 1 alone, undated ones apart (their index condition is another). As one
    OR, a part of a name most senders share walked the emails' rows by date testing
    each (B6's "bergstr": 17,898 rows, 24-26 ms; 9-14 ms so, the ranks included).

    The rank is read with the matches and they are ordered here: ordering them in the
    database took a second query over the kept ids, and a third to count them (B6:
    12-15 ms of a 57 ms search at 300,000 emails)."""
    text = searched(text)
    newest = emails.order_by("-sent_at", "-pk")
    if not postgres():
        # One more than RANKED: whether there are more.
        ids = list(newest.filter(_plain_condition(text)).values_list("pk", flat=True)[: RANKED + 1])
        return Found(emails, ids[:RANKED], mailboxes=mailboxes, more=len(ids) > RANKED, text=text)
    configs = _configs(mailboxes)
    query = search_query(text, mailboxes, configs)
    rank = SearchRank(F("search"), query)
    words = newest.filter(_words(text, query, configs)).annotate(rank=rank)
    parts = {"words": words.values_list("pk", "sent_at", "rank")[: RANKED + 1]}
    if _by_sender_too(text):
        by_sender = newest.filter(_by_sender(text)).values_list("pk", "sent_at")
        oldest = RawSQL(_OLDEST_KEPT, [RANKED], output_field=DateTimeField())  # noqa: S611 - ours
        parts["dated"] = by_sender.filter(sent_at__gte=oldest)[: RANKED + 1]
        parts["undated"] = by_sender.filter(sent_at__isnull=True)[: RANKED + 1]
    # An email found by its sender alone is ranked as before, by what its words share
    # with the query (a part of them; none: 0; its vector still to be filled: unranked),
    # read for the kept ones only (B6's "bergstr": 1,001 rows by id, 3-4 ms).
    rank_of = (
        emails.model.objects.filter(pk=RawSQL("kept.id", ()))
        .order_by()
        .annotate(rank=rank)
        .values("rank")
    )
    try:
        compiled = {name: part.query.sql_with_params() for name, part in parts.items()}
        rank_sql, rank_params = rank_of.query.sql_with_params()
    except EmptyResultSet:  # no mailbox to search
        return Found(emails, [], mailboxes=mailboxes, more=False, text=text, query=query,
                     worded=set(), configs=configs)  # fmt: skip
    ctes, params = [], []
    for name, (sql, part_params) in compiled.items():
        columns = "(id, at, rank)" if name == "words" else "(id, at)"
        ctes.append(f"{name}{columns} AS MATERIALIZED ({sql})")
        params += part_params
    union = " UNION ALL ".join(
        "SELECT id, at, rank, true FROM words"
        if name == "words"
        else f"SELECT id, at, NULL::real, false FROM {name}"  # noqa: S608
        for name in parts
    )
    # Only Django's SQL and the names above go into it; every value is a parameter.
    sql = (
        f"WITH {', '.join(ctes)}, kept AS ("  # noqa: S608
        "SELECT id, at, max(rank) AS rank, bool_or(worded) AS worded"
        f" FROM ({union}) AS found (id, at, rank, worded) GROUP BY id, at"
        " ORDER BY at DESC NULLS FIRST, id DESC LIMIT %s)"
        f" SELECT id, at IS NULL, CASE WHEN worded THEN rank ELSE ({rank_sql}) END, worded"
        " FROM kept ORDER BY at DESC NULLS FIRST, id DESC"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, RANKED + 1, *rank_params])
        rows = cursor.fetchall()
    more, rows = len(rows) > RANKED, rows[:RANKED]
    # Best first (unranked last); then newest (undated last); then the latest stored.
    # The last two are the rows' own order: newest first, undated (NULLs) first, then
    # `id DESC`, and the sort is stable, so among equal ranks it keeps that order but
    # for the undated, moved last. Their dates need not be read (a datetime made for
    # each of 1,001 rows: B6's searches at 300,000 took 2.5-4 ms more CPU a request).
    rows.sort(key=lambda row: (row[2] is None, -(row[2] or 0), row[1]))
    ids = [row[0] for row in rows]
    worded = {row[0] for row in rows if row[3]}
    return Found(
        emails,
        ids,
        mailboxes=mailboxes,
        more=more,
        text=text,
        query=query,
        worded=worded,
        configs=configs,
    )


# The date below which no sender's match can be among the newest RANKED + 1 matches:
# the words' last, once they alone fill them. An index condition, so the walk of the
# date index stops there (a common word and a part of no sender's name).
_OLDEST_KEPT = (
    "SELECT CASE WHEN count(*) > %s THEN min(at) ELSE '-infinity'::timestamptz END FROM words"
)


class _People(Func):
    """A JSON list of recipients' names and addresses as one text, to search them: the
    column's own text escapes non-ASCII letters ("J\\u00fcrgen") and holds the keys
    ("name", "address") as words. SQLite's function is mailsetup/sqlite.py's."""

    function = "mailsetup_people"
    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra):
        # Only where a test reads the fallback on PostgreSQL: its values, unescaped.
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(jsonb_path_query_array({sql}, 'lax $[*].*'))::text", params


_PLAIN_COLUMNS = ("subject", "from_name", "from_address", "text_body")


def _plain_word(word: str) -> Q:
    """One word in any of the columns searched, in any case."""
    found = reduce(or_, [Q(**{f"{column}__icontains": word}) for column in _PLAIN_COLUMNS])
    for column in ("to", "cc"):
        found |= Q(IContains(_People(F(column)), word))
    return found


# A "quoted phrase" (its words each, anywhere), or a word; either may be a -one.
_PLAIN_TOKENS = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def _plain_groups(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """What was typed as websearch reads it: groups of (words wanted, what is left out:
    a -word, or all the words of a -"phrase"); any group will do ("or" between them),
    each wants all of its words and none of what it leaves out ("alpha beta or gamma":
    alpha and beta, or gamma)."""
    groups: list[tuple[list[str], list[list[str]]]] = [([], [])]
    lone_minus = False
    for found in _PLAIN_TOKENS.finditer(text):
        minus, quoted, bare = found.groups()
        if bare == "-":  # websearch: "pump - late" is pump without late
            lone_minus = True
            continue
        if bare is not None:
            if bare.lower() == "or":
                groups.append(([], []))
                lone_minus = False
                continue
            minus = "-" if bare.startswith("-") and len(bare) > 1 else ""
            words = [bare[1:] if minus else bare]
        else:
            words = quoted.split()  # inside quotes, "or" is a word
        minus, lone_minus = minus or ("-" if lone_minus else ""), False
        words = [word for word in words if word]
        if minus and words:
            groups[-1][1].append(words)
        else:
            groups[-1][0].extend(words)
    return [group for group in groups if group[0] or group[1]]


def _plain_words(text: str) -> list[str]:
    """The words wanted, to mark them."""
    return [word for wanted, _left_out in _plain_groups(text) for word in wanted]


def _grouped(text: str, word: Callable[[str], Q]) -> Q:
    """The emails `_plain_groups(text)` asks for, each word found by `word`: any group
    will do, each wants all of its words and none of what it leaves out."""
    found = Q(pk__in=[])
    for wanted, left_out in _plain_groups(text):
        group = reduce(and_, [word(each) for each in wanted], Q())
        for words in left_out:
            group &= ~reduce(and_, [word(each) for each in words])
        found |= group
    return found


def _plain_condition(text: str) -> Q:
    """SQLite's search (`_plain_groups`): each word in the subject, the sender, the
    recipients or the body; the words of a "quoted phrase" each, anywhere."""
    return _grouped(text, _plain_word)


def words_in(field: str, text: str) -> Q:
    """The words typed, read as the emails' search reads them (`_plain_groups`), each a
    part of one text field in any case: for what has no search vector (a timeline's
    meetings and tasks), so that "pump delivery" finds "Delivery of the pump" there as
    it finds it in an email."""
    return _grouped(text, lambda word: Q(**{f"{field}__icontains": word}))


def _condition(text: str, query: SearchQuery, configs: list[str]) -> Q:
    """PostgreSQL's search: the words (`_words`), or a part of the sender's name or
    address (`_by_sender`)."""
    condition = _words(text, query, configs)
    if _by_sender_too(text):
        condition |= _by_sender(text)
    return condition


def _words(text: str, query: SearchQuery, configs: list[str]) -> Q:
    """The words in the vector; an email whose vector is still to be filled
    (vectors_later) is found by its subject, through the small index of those waiting
    (email_search_pending)."""
    return _without_left_out(text, query, configs) | (
        Q(search__isnull=True) & words_in("subject", text)
    )


def _without_left_out(text: str, query: SearchQuery, configs: list[str]) -> Q:
    """The emails with the words of `query` (`text` in each of `configs`), leaving out
    those that hold a -word (or a -"phrase") in any of the languages searched. The
    query is one websearch per language, ORed: the 'simple' one's "report & !invoices"
    is true of an English vector, which holds "invoic", so its -word left nothing out.
    With "or", each group ("alpha -beta or gamma": alpha without beta, or gamma) is
    asked for so, its -words left out of it alone. A text that `_plain_groups` reads
    otherwise than websearch does (`_unlike_websearch`) keeps websearch's own reading."""
    if _unlike_websearch(text):
        return Q(search=query)
    parts = [(part, groups[0]) for part in _or_parts(text) if (groups := _plain_groups(part))]
    if not any(left_out for _part, (_wanted, left_out) in parts):
        return Q(search=query)
    found = Q(pk__in=[])
    for part, (_wanted, left_out) in parts:
        group = Q(search=query if len(parts) == 1 else search_query(part, (), configs))
        phrases = [
            SearchQuery(" ".join(words), config=config, search_type="phrase")
            for config in configs
            for words in left_out
        ]
        if phrases:
            group &= ~Q(search=reduce(or_, phrases))
        found |= group
    return found


def _unlike_websearch(text: str) -> bool:
    """Whether websearch reads `text` otherwise than `_plain_groups`: a quote inside a
    word opens a phrase there ('12" pipe or tube': "pipe or tube" is a phrase); "or"
    before a punctuation mark is still "or" ("report -x or, late"); "--x" is x."""
    for token in _PLAIN_TOKENS.finditer(text):
        bare = token.group(3) or ""
        if '"' in bare or bare.startswith("--") or _OR_AND_MARK.match(bare):
            return True
    return False


_OR_AND_MARK = re.compile(r"(?i)or[^\w\s-]")


def _or_parts(text: str) -> list[str]:
    """`text` cut at each "or" between words (not inside a "quoted phrase"), as
    websearch cuts it."""
    parts, start = [], 0
    for token in _PLAIN_TOKENS.finditer(text):
        if (token.group(3) or "").lower() == "or":
            parts.append(text[start : token.start()])
            start = token.end()
    return [*parts, text[start:]]


def _by_sender_too(text: str) -> bool:
    """Whether a part of the sender is searched: three characters or more, one of them a
    letter or a digit (pg_trgm reads only those: "..." names no sender)."""
    return len(text) >= TRIGRAM_MIN and any(_word_character(c) for c in text)


def _word_character(character: str) -> bool:
    # pg_trgm's: a letter or a decimal digit ("²" and "Ⅷ" are not).
    return character.isalpha() or character.isdecimal()


def _full_trigrams(text: str) -> int:
    """How many trigrams of three letters or digits the text holds, as pg_trgm reads a
    LIKE pattern: "bergstr" five, ".com" one, "o'b" none."""
    count = run = 0
    for character in text:
        run = run + 1 if _word_character(character) else 0
        count += run >= 3
    return count


def _by_sender(text: str) -> Q:
    """A part of the sender's name or address, in either case: Email.sender_upper holds
    them upper-cased by the database, and the text is upper-cased there too (Python's
    upper() is not PostgreSQL's: "ß" is "SS" to one and "ß" to the other). They are one
    text, the name, a space and the address: a text with a space may span both ("Smith
    john@"), which still names that sender.

    A text of fewer than two full trigrams is looked for by walking the date index
    (email_sent_sender holds the sender: its rows are not read), never through the
    trigram index: its trigrams ("com", "  b" for "o'b") are held by most senders, the
    planner cannot know it, and a LIKE that matched none rechecked all 300,000 emails
    (".com" 0.3-1.2 s, "o'b" 115-165 ms); the walk costs at most ~70 ms at 300,000, and
    stops after the newest matches."""
    if _full_trigrams(text) >= 2:
        return Q(sender_upper__contains=Upper(Value(text)))
    return Q(Contains(_Unindexed(F("sender_upper")), Upper(Value(text))))


class _Unindexed(Func):
    """The column as an expression no index is on, so that the planner walks the dates."""

    template = "(%(expressions)s || '')"
    output_field = TextField()


@contextmanager
def vectors_later():
    """Emails inserted inside this block (in a transaction) get no search vector now;
    `vectors_fill` computes it after. For the bulk store only: a first sync stores
    thousands of emails a minute, and the vector of each (to_tsvector over its body)
    cost more than the rest of storing it."""
    if not postgres():
        yield
        return
    # Local to the transaction, and set in a savepoint of its own: should anything
    # inside fail, rolling the savepoint back undoes the setting with it, so no other
    # insert of the transaction goes without its vector, and no SQL runs on an aborted
    # transaction (which would replace the error the store's fallback must see). The
    # savepoint and the setting go in one round trip each way, not Django's atomic():
    # the store enters this once per batch, and four round trips cost a first sync
    # (B1) 4-5 ms a batch.
    if not connection.in_atomic_block:
        raise RuntimeError("vectors_later() is for a block inside transaction.atomic()")
    name = f"vectors_later_{next(_savepoints)}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SAVEPOINT {name};"
            " SELECT current_setting('mailsetup.search_later', true),"
            " set_config('mailsetup.search_later', 'on', true)"
        )
        cursor.nextset()  # past the SAVEPOINT's result to the SELECT's
        before = cursor.fetchone()[0] or "off"
        try:
            yield
        except BaseException:
            # A connection that broke cannot roll back: the original error is the one to
            # see, and the caller's transaction is rolled back whole.
            with suppress(Error):
                cursor.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
            raise
        # Back to what it was before (this block may be inside another), then gone.
        cursor.execute(
            f"SELECT set_config('mailsetup.search_later', '{'on' if before == 'on' else 'off'}',"
            f" true); RELEASE SAVEPOINT {name}"
        )


_savepoints = itertools.count()


_VECTORS = """
    UPDATE sync_email e
       SET search = sync_email_vector(
             coalesce(sync_search_config(a.message_language), 'simple'::regconfig),
             e.subject, e.from_name, e.from_address, e."to", e.cc, e.text_body, e.html_body)
      FROM accounts_emailaccount a
     WHERE a.id = e.account_id AND e.id {rows}
"""
FILL = _VECTORS.format(
    rows="IN (SELECT id FROM sync_email WHERE search IS NULL"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
)
FILL_ONE = _VECTORS.format(rows="= %s")


def vectors_fill(*, batch: int = FILL_BATCH, seconds: float = FILL_SECONDS) -> int:
    """Compute the search vectors the bulk store left for later, oldest email first,
    `batch` at a time, each batch its own transaction. Two fills share the work: each
    skips the rows the other holds. After `seconds` with more to do it queues a new fill
    and returns, so that a backlog of a large first sync never holds one worker. Returns
    how many vectors it filled."""
    if not postgres():
        return 0
    began, filled = time.monotonic(), 0
    while True:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(FILL, [batch])
                done = cursor.rowcount
        except (DataError, InternalError, ProgrammingError) as error:
            # One email the function refuses must not stop every later one: this batch
            # one by one, the refused one with what can be read of it.
            logger.warning("A batch of search vectors failed (%s); filling one by one",
                           type(error).__name__)  # fmt: skip
            done = _fill_one_by_one(batch)
        filled += done
        if done < batch:  # none left, or the rest is another fill's
            return filled
        if time.monotonic() - began >= seconds:
            vectors_fill_soon(again=True)
            return filled


# What an email whose full vector the database refused is found by: its subject and
# sender, as words ('simple'), so that it is not lost to search.
FILL_SHORT = """
    UPDATE sync_email SET search =
        setweight(to_tsvector('simple', left(coalesce(subject, ''), 1000)), 'A')
        || setweight(to_tsvector('simple', coalesce(from_name, '') || ' '
                                 || coalesce(from_address, '')), 'B')
     WHERE id = %s
"""


def _fill_one_by_one(batch: int) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM sync_email WHERE search IS NULL ORDER BY id LIMIT %s"
            " FOR UPDATE SKIP LOCKED",
            [batch],
        )
        ids = [row[0] for row in cursor.fetchall()]
        refused = 0
        for email_id in ids:
            try:
                with transaction.atomic():
                    cursor.execute(FILL_ONE, [email_id])
                continue
            except (DataError, InternalError, ProgrammingError) as error:
                refused += 1
                if refused == len(ids) > 1:
                    # Every one of them: not an email's doing but ours (a function
                    # missing, a broken migration). Loudly, and nothing filled.
                    raise
                logger.warning(
                    "Email %s: its search vector was refused (%s); it is found by its "
                    "subject and sender", email_id, type(error).__name__,
                )  # fmt: skip
            try:
                with transaction.atomic():
                    cursor.execute(FILL_SHORT, [email_id])
            except (DataError, InternalError, ProgrammingError):
                cursor.execute("UPDATE sync_email SET search = ''::tsvector WHERE id = %s",
                               [email_id])  # fmt: skip
    return len(ids)


def vectors_fill_soon(*, again: bool = False) -> None:
    """Queue `vectors_fill` once the current transaction commits; at most once in
    FILL_QUEUED_SECONDS from this process unless `again` (a fill handing over). If the
    task queue is down, beat's fill every minute does it once it is back."""
    if not postgres():
        return
    if not again and not cache.add(FILL_QUEUED_KEY, True, FILL_QUEUED_SECONDS):
        return
    from .tasks import search_vectors

    publish_on_commit(search_vectors)


def vectors_waiting(account_ids, *, bound: int = 10_000) -> int:
    """How many of these mailboxes' emails (a list of ids; None: every mailbox's) wait
    for their search vector, counted up to `bound` + 1 (the partial indexes of those
    waiting serve it; given a subquery, the planner reads every mailbox's instead)."""
    if not postgres():
        return 0
    from mailsetup.keyset import bounded_count

    from .models import Email

    waiting = Email.objects.filter(search__isnull=True)
    if account_ids is not None:
        waiting = waiting.filter(account_id__in=account_ids)
    return bounded_count(waiting, bound)


class SearchConfigOf(Func):
    """The text search configuration of a message language, in the database."""

    function = "sync_search_config"
    output_field = TextField()


def _headlines(query: SearchQuery, text: str, configs: list[str], ids: list[int]) -> dict:
    """The subject and a part of the body with the words found between START and STOP,
    each read in its mailbox's language; for the emails of `ids` only (None for the
    others). The body's part is read by sync_body_headline (migration sync 0024)."""
    config = SearchConfigOf(F("account__message_language"))
    options = {"start_sel": START, "stop_sel": STOP, "config": config}
    words = _plain_words(text)
    headlines = {
        "subject_hl": SearchHeadline(_unmarked("subject"), query, highlight_all=True, **options),
        "body_hl": Func(
            config, _unmarked("text_body", BODY_HEADLINE_CHARS),
            _any_word(words, configs) if words else query,
            Value(words, output_field=ArrayField(TextField())), Value(BODY_HEADLINE), Value(START),
            function="sync_body_headline", output_field=TextField(),
        ),
    }  # fmt: skip
    chosen = AnyOf(F("pk"), ids)
    return {
        name: Case(When(chosen, then=headline), default=Value(None), output_field=TextField())
        for name, headline in headlines.items()
    }


def _unmarked(column: str, first: int | None = None):
    """The column (its `first` characters: all a headline reads) without the characters
    that mark a headline's words: an email's own would read as a match (and
    sync_body_headline would take the part holding one for the part where the words
    are)."""
    text = F(column) if first is None else Left(F(column), first)
    # replace() gives back the text itself where there is nothing to replace (nearly
    # always), where translate() builds a copy a character at a time.
    for marker in (START, STOP):
        text = Func(text, Value(marker), Value(""), function="replace", output_field=TextField())
    return text


def _any_word(words: list[str], configs: list[str]) -> SearchQuery:
    """Each word typed, any of them: what a body's headline marks. The search's own
    query would mark only where all of them are near each other (a cover): a part of the
    body with one of them would show none."""
    return reduce(
        or_,
        [SearchQuery(w, config=c, search_type="plain") for c in configs for w in words],
    )


def _highlight_plain(emails: list, text: str) -> None:
    """SQLite: each word typed marked where it occurs, in the subject and around the
    first place of any in the body."""
    from .models import Email

    words = _plain_words(text)
    bodies = dict(
        Email.objects.filter(pk__in=[email.pk for email in emails]).values_list("pk", "text_body")
    )
    for email in emails:
        email.subject_html = _marked(_mark_plain(email.subject, words))
        email.snippet_html = _marked(_snippet(bodies.get(email.pk) or "", words))


_MARKERS = re.compile(f"[{START}{STOP}]")
# Marks that open and close in turn, none inside another: what ts_headline writes, and
# all but never what a page shows (50 rows, two texts each), read in one pass.
_BALANCED = re.compile(f"[^{START}{STOP}]*(?:{START}[^{START}{STOP}]*{STOP}[^{START}{STOP}]*)*")


def _marked(text: str | None) -> SafeString:
    """Escape everything, then turn the markers into <mark>. A marker the email itself
    held becomes a harmless <mark> too: one opened inside another is dropped, as is one
    that closes nothing; one left open is closed at the end."""
    escaped = html.escape(text or "")
    if _BALANCED.fullmatch(escaped):
        return mark_safe(escaped.replace(START, "<mark>").replace(STOP, "</mark>"))  # noqa: S308
    pieces, opened = [], False
    position = 0
    for marker in _MARKERS.finditer(escaped):
        pieces.append(escaped[position : marker.start()])
        position = marker.end()
        if marker.group() == START and not opened:
            pieces.append("<mark>")
            opened = True
        elif marker.group() == STOP and opened:
            pieces.append("</mark>")
            opened = False
    pieces.append(escaped[position:])
    if opened:
        pieces.append("</mark>")
    return mark_safe("".join(pieces))  # noqa: S308 - escaped above


def _terms(terms: str | list[str]) -> re.Pattern | None:
    """One expression for the terms (the longest first, so that one inside another
    does not cut it short), in any case."""
    terms = [terms] if isinstance(terms, str) else terms
    terms = sorted({term for term in terms if term}, key=len, reverse=True)
    if not terms:
        return None
    return re.compile("|".join(re.escape(term) for term in terms), re.I)


def _mark_plain(text: str, terms: str | list[str]) -> str:
    """The terms marked wherever they occur (any case), our markers removed from the
    source first. Found in the text itself, not in a lower-cased copy: lower() changes
    the length of some characters ("İ"), and the marks would land beside the match."""
    text = (text or "").replace(START, "").replace(STOP, "")
    expression = _terms(terms)
    if expression is None:
        return text
    return expression.sub(lambda m: f"{START}{m.group(0)}{STOP}", text)


def _snippet(body: str, terms: str | list[str], width: int = 120) -> str:
    """SQLite: the body around the first place of any of the terms (found as
    `_mark_plain` finds them: in the body itself, not in a lower-cased copy whose
    positions may differ); "…" where the body goes on."""
    expression = _terms(terms)
    found = expression.search(body or "") if expression is not None else None
    if found is None:
        return ""
    start = max(0, found.start() - width)
    end = found.end() + width
    piece = body[start:end]
    return ("… " if start else "") + _mark_plain(piece, terms) + (" …" if end < len(body) else "")

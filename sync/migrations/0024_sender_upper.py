# Issue 19: a search for a part of the sender's name or address (sync.search) walks the
# date index alone, and a search's headline reads the part of the body where the words
# are. The column is stored, so adding it rewrites sync_email and its indexes, and the
# new indexes are built after: reading or writing emails waits for the whole migration
# (300,000 emails: 31 s here), which is one transaction, so that it is all or nothing.
# One trigram index over the column replaces the two over the name and the address, and
# the covering date index the plain one on sent_at: a stored email writes one index
# fewer than before.

import django.db.models.functions.text
from django.db import migrations, models

import mailsetup.fields
import mailsetup.indexes

# A body's headline: around a typed word found as typed (any case), in about 450
# characters from 150 before it (from a word's start to a word's end), when that part
# shows a word marked: the first place of each word, in order, up to 3 parts (a word
# found inside another, such as "the" in "there", or a stop word, marks nothing there);
# else, as before, over the first 20,000 characters. ts_headline reads all it is given,
# each word through the dictionaries: a page of 50 bodies of 20,000 characters took
# 2.5 ms each. `mark`: the StartSel in `options`. The places are read in lower(source):
# where lower() changes a character's length (ICU's "İ") a part may miss its word, and
# the first 20,000 characters are read after all.
BODY_HEADLINE = """
CREATE OR REPLACE FUNCTION sync_body_headline(
    cfg regconfig, body text, query tsquery, words text[], options text, mark text
) RETURNS text AS $$
DECLARE
  source text := left(coalesce(body, ''), 20000);
  lowered text := lower(source);
  places int[] := '{}';
  place int;
  first int;
  gap int;
  part text;
  covered int := 0;
  tried int := 0;
  word text;
  result text;
BEGIN
  FOREACH word IN ARRAY coalesce(words, '{}') LOOP
    place := strpos(lowered, lower(word));
    IF place > 0 THEN
      places := places || place;
    END IF;
  END LOOP;
  FOR place IN SELECT p FROM unnest(places) AS p ORDER BY p LOOP
    CONTINUE WHEN place < covered;  -- inside a part read already
    first := greatest(1, place - 150);
    IF first > 1 THEN  -- from the start of a word
      gap := strpos(substr(source, first, 30), ' ');
      IF gap > 0 THEN
        first := first + gap;
      END IF;
    END IF;
    part := substr(source, first, 450);
    IF first + 450 <= length(source) THEN  -- to the end of a word
      part := regexp_replace(part, '\\S+$', '');
    END IF;
    result := ts_headline(cfg, part, query, options);
    IF strpos(result, mark) > 0 THEN
      RETURN result;
    END IF;
    covered := first + length(part);
    tried := tried + 1;
    EXIT WHEN tried >= 3;
  END LOOP;
  RETURN ts_headline(cfg, source, query, options);
END
$$ LANGUAGE plpgsql STABLE PARALLEL SAFE
"""

FORWARDS = [
    BODY_HEADLINE,
    "DROP INDEX IF EXISTS email_from_name_trgm",
    "DROP INDEX IF EXISTS email_from_address_trgm",
    "CREATE INDEX email_sender_trgm ON sync_email USING gin (sender_upper gin_trgm_ops)",
]

BACKWARDS = [
    "DROP FUNCTION IF EXISTS sync_body_headline(regconfig, text, tsquery, text[], text, text)",
    "DROP INDEX IF EXISTS email_sender_trgm",
    "CREATE INDEX email_from_address_trgm ON sync_email"
    " USING gin ((UPPER(from_address::text)) gin_trgm_ops)",
    "CREATE INDEX email_from_name_trgm ON sync_email"
    " USING gin ((UPPER(from_name::text)) gin_trgm_ops)",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0009_add_signature_switch"),
        ("crm", "0005_job_title_trigram_index"),
        ("sync", "0023_link_dates"),
    ]

    operations = [
        migrations.AddField(
            model_name="email",
            name="sender_upper",
            field=mailsetup.fields.StoredGeneratedField(
                expression=django.db.models.functions.text.Upper(
                    django.db.models.functions.text.Concat(
                        "from_name", models.Value(" "), "from_address"
                    )
                ),
                output_field=models.TextField(),
            ),
        ),
        migrations.AlterField(
            model_name="email",
            name="sent_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="email",
            index=mailsetup.indexes.PostgresCoveringIndex(
                fields=["-sent_at", "-id"],
                covers=("account", "sender_upper"),
                name="email_sent_sender",
            ),
        ),
        migrations.RunPython(_run(FORWARDS), _run(BACKWARDS)),
    ]

# Issue 19: a search for a part of the sender's name or address (sync.search) walks the
# date index alone, and a search's headline reads the part of the body where the words
# are. The column is stored, so adding it rewrites sync_email once (300,000
# emails: about 20 s here, the table locked meanwhile); one trigram index over it
# replaces the two over the name and the address, and the covering date index the plain
# one on sent_at, so a stored email still writes as many indexes as before.

import django.db.models.functions.text
from django.db import migrations, models

# A body's headline: around the first of the words typed found as typed (any case), in
# 450 characters from 150 before it, when that part shows one of them marked; else, as
# before, over the first 20,000 characters. ts_headline reads all it is given, each word
# through the dictionaries: a page of 50 bodies of 20,000 characters took 2.5 ms each.
# `mark`: the StartSel in `options`.
BODY_HEADLINE = """
CREATE OR REPLACE FUNCTION sync_body_headline(
    cfg regconfig, body text, query tsquery, words text[], options text, mark text
) RETURNS text AS $$
DECLARE
  source text := left(coalesce(body, ''), 20000);
  lowered text := lower(source);
  first int := 0;
  found int;
  word text;
  result text;
BEGIN
  FOREACH word IN ARRAY coalesce(words, '{}') LOOP
    found := strpos(lowered, lower(word));
    IF found > 0 AND (first = 0 OR found < first) THEN
      first := found;
    END IF;
  END LOOP;
  IF first > 0 THEN
    result := ts_headline(cfg, substr(source, greatest(1, first - 150), 450), query, options);
    IF strpos(result, mark) > 0 THEN
      RETURN result;
    END IF;
  END IF;
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
            field=models.GeneratedField(
                db_persist=True,
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
            index=models.Index(
                fields=["-sent_at", "-id"],
                include=("account", "sender_upper"),
                name="email_sent_sender",
            ),
        ),
        migrations.RunPython(_run(FORWARDS), _run(BACKWARDS)),
    ]

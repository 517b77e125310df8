from importlib import import_module

from django.db import migrations

# Issue 19: computing an email's search vector as it is stored made a first sync less
# than half as fast (B1: 816 -> 351 emails/s; most of it to_tsvector over the bodies).
# The vector is now one function (sync_email_vector), which the trigger calls for every
# email written one at a time (Exchange, the sending app, the admin, the tests'
# factories) and for every change of the columns it reads, while the IMAP store's bulk
# insert asks for it later (the session setting mailsetup.search_later) and a task fills
# it in batches (sync.search.vectors_fill). Until then an email is found by its subject
# and sender (sync.search.matching), through the small index of those still waiting.
FORWARDS = [
    """
    CREATE OR REPLACE FUNCTION sync_email_vector(
      cfg regconfig, subject text, from_name text, from_address text, recipients_to jsonb,
      recipients_cc jsonb, text_body text, html_body text
    ) RETURNS tsvector AS $$
      SELECT
        setweight(to_tsvector(cfg, coalesce(subject, '')), 'A')
        || setweight(to_tsvector('simple'::regconfig, coalesce(from_name, '') || ' '
                                 || coalesce(from_address, '')), 'B')
        || setweight(to_tsvector('simple'::regconfig, left(
             jsonb_path_query_array(coalesce(recipients_to, '[]'), 'lax $[*].*')::text || ' '
             || jsonb_path_query_array(coalesce(recipients_cc, '[]'), 'lax $[*].*')::text,
             20000)), 'C')
        || setweight(to_tsvector(cfg, left(coalesce(nullif(text_body, ''),
             regexp_replace(left(coalesce(html_body, ''), 200000), '<[^>]*>', ' ', 'g')),
             100000)), 'D')
    $$ LANGUAGE sql IMMUTABLE PARALLEL SAFE
    """,
    """
    CREATE OR REPLACE FUNCTION sync_email_search_update() RETURNS trigger AS $$
    DECLARE
      cfg regconfig;
    BEGIN
      SELECT sync_search_config(message_language) INTO cfg
        FROM accounts_emailaccount WHERE id = NEW.account_id;
      NEW.search := sync_email_vector(coalesce(cfg, 'simple'::regconfig), NEW.subject,
        NEW.from_name, NEW.from_address, NEW."to", NEW.cc, NEW.text_body, NEW.html_body);
      RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    "DROP TRIGGER IF EXISTS sync_email_search ON sync_email",
    # The WHEN clause costs the bulk insert no function call per row.
    """
    CREATE TRIGGER sync_email_search_insert BEFORE INSERT ON sync_email FOR EACH ROW
      WHEN (current_setting('mailsetup.search_later', true) IS DISTINCT FROM 'on')
      EXECUTE FUNCTION sync_email_search_update()
    """,
    """
    CREATE TRIGGER sync_email_search_update BEFORE UPDATE OF
      subject, from_name, from_address, "to", cc, text_body, html_body
      ON sync_email FOR EACH ROW EXECUTE FUNCTION sync_email_search_update()
    """,
    "CREATE INDEX email_search_pending ON sync_email (id) WHERE search IS NULL",
    # Any email still without one (none should be: 0017 filled them).
    "UPDATE sync_email SET subject = subject WHERE search IS NULL",
]

# Back to 0017's trigger, which computes the vector itself.
_0017 = import_module("sync.migrations.0017_search_and_keyset_indexes")
BACKWARDS = [
    "DROP INDEX IF EXISTS email_search_pending",
    "DROP TRIGGER IF EXISTS sync_email_search_update ON sync_email",
    "DROP TRIGGER IF EXISTS sync_email_search_insert ON sync_email",
    *[s for s in _0017.FORWARDS if "sync_email_search_update()" in s],
    "UPDATE sync_email SET subject = subject WHERE search IS NULL",
    "DROP FUNCTION IF EXISTS sync_email_vector(regconfig, text, text, text, jsonb, jsonb, text, text)",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("sync", "0017_search_and_keyset_indexes")]

    operations = [migrations.RunPython(_run(FORWARDS), _run(BACKWARDS))]

from django.db import migrations

# Issue 19: the Contacts and Companies lists and the link picker search with icontains,
# which PostgreSQL runs as UPPER(col::text) LIKE UPPER('%term%'): trigram indexes on the
# same expressions serve it. None on SQLite.
INDEXES = {
    "crm_contact_name_trgm": ("crm_contact", "name"),
    "crm_contactaddress_address_trgm": ("crm_contactaddress", "address"),
    "crm_company_name_trgm": ("crm_company", "name"),
    "crm_company_web_domain_trgm": ("crm_company", "web_domain"),
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, column) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX {name} ON {table} USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    # pg_trgm is created (and dropped on the way back) by sync 0017.
    dependencies = [("crm", "0003_email_link_changes"), ("sync", "0017_search_and_keyset_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]

"""The attribute index (search.attribute_index): SQLite only, filled from stored spans."""

from django.db import migrations


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return  # PostgreSQL runs attribute queries without it
    from search.attribute_index import CREATE_SQL, index_rebuild

    schema_editor.execute(CREATE_SQL)
    index_rebuild()


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        from search.attribute_index import TABLE

        schema_editor.execute(f"DROP TABLE IF EXISTS {TABLE}")


class Migration(migrations.Migration):
    dependencies = [("search", "0001_history_and_saved_filters"), ("traces", "0004_model_prices")]

    operations = [migrations.RunPython(create_index, drop_index)]

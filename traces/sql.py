"""Raw SQL for the ingest hot path, where the ORM costs ~3.6x (shared/PERFORMANCE.md)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection
from django.db.models import Model


def upsert_sql(
    model: type[Model],
    columns: Sequence[str],
    conflict: Sequence[str],
    keep: Sequence[str] = (),
    source: str | None = None,
) -> str:
    """``INSERT ... ON CONFLICT DO UPDATE`` of every column but ``conflict`` and ``keep``.

    Rows come from ``%s`` parameters, or with ``source`` (a quoted table name) from a
    ``SELECT`` of it. The same statement works on SQLite (3.24+) and PostgreSQL. Table and
    column names come from the model, never from request data; values travel as parameters.
    """
    quote = connection.ops.quote_name
    names = ", ".join(quote(name) for name in columns)
    rows = (
        f"SELECT {names} FROM {source}"  # noqa: S608
        if source
        else f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    updates = ", ".join(
        f"{quote(name)} = excluded.{quote(name)}"
        for name in columns
        if name not in conflict and name not in keep
    )
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({names}) {rows} "
        f"ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET {updates}"
    )


def upsert_rows(model: type[Model], columns: Sequence[str], conflict: Sequence[str], rows) -> None:
    """Upsert ``rows`` (tuples in ``columns`` order; no two with the same ``conflict`` key).

    SQLite: one prepared ``executemany``. PostgreSQL: Django binds parameters client-side,
    so an ``executemany`` there re-parses and re-plans the statement for every row (~4,000
    spans/s); instead the rows are COPYed into a temporary table and upserted from it in
    one set-based statement (~13,000 spans/s, measured on the ingest benchmark's spans).
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.executemany(upsert_sql(model, columns, conflict), rows)
        return
    import psycopg

    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    load = quote(f"msgtrace_load_{model._meta.db_table}")
    names = ", ".join(quote(name) for name in columns)
    connection.ensure_connection()
    # wrap_database_errors: psycopg's errors become Django's, as through connection.cursor().
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        # Lives as long as the connection; emptied at every commit and after each use.
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {load} ON COMMIT DELETE ROWS "  # noqa: S608
            f"AS SELECT {names} FROM {table} WITH NO DATA"
        )
        with cursor.copy(f"COPY {load} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(upsert_sql(model, columns, conflict, source=load))
        cursor.execute(f"TRUNCATE {load}")

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
) -> str:
    """``INSERT ... ON CONFLICT DO UPDATE`` of every column but ``conflict`` and ``keep``.

    The same statement works on SQLite (3.24+) and PostgreSQL. Table and column names come
    from the model, never from request data; values travel as parameters.
    """
    quote = connection.ops.quote_name
    names = ", ".join(quote(name) for name in columns)
    placeholders = ", ".join(["%s"] * len(columns))
    updates = ", ".join(
        f"{quote(name)} = excluded.{quote(name)}"
        for name in columns
        if name not in conflict and name not in keep
    )
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({names}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET {updates}"
    )

"""What people searched for, and the searches they named: kept on the server, not the browser."""

from __future__ import annotations

from datetime import timedelta

from django.db import models, transaction
from django.utils import timezone

HISTORY_SIZE = 20
HISTORY_QUERY_CHARS = 500
# Typing refines a query in steps ("dur" … "duration:>2s"); steps this close in time to the
# newest entry replace it rather than filling the history with prefixes.
_REFINE_WINDOW = timedelta(seconds=60)


class SearchHistoryQuerySet(models.QuerySet):
    def newest_first(self) -> SearchHistoryQuerySet:
        """Most recently used first: the order of the history menu."""
        return self.order_by("-last_used", "-pk")


class SearchHistory(models.Model):
    # Unique, so indexed: bounded well below PostgreSQL's ~2,700-byte b-tree entry limit.
    query = models.CharField(max_length=HISTORY_QUERY_CHARS, unique=True)
    last_used = models.DateTimeField()

    objects = SearchHistoryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "search history"
        indexes = [models.Index(fields=["-last_used"], name="history_last_used")]

    def __str__(self) -> str:
        return self.query


class SavedFilter(models.Model):
    name = models.CharField(max_length=100, unique=True)
    query = models.CharField(max_length=2000)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def history_record(*, query: str) -> bool:
    """Remember a query that ran: newest first, distinct, at most ``HISTORY_SIZE``.

    Returns whether the history's order or contents changed (the menu then needs redrawing).
    """
    query = query.strip()
    if not query or len(query) > HISTORY_QUERY_CHARS:
        return False  # a very long query is rare enough not to be worth remembering
    # Paging or sorting re-runs the newest query: already on top, so no write (on SQLite a
    # write would queue behind ingest's lock).
    newest = SearchHistory.objects.newest_first().first()
    if newest is not None and newest.query == query:
        return False
    now = timezone.now()
    with transaction.atomic():
        if (
            newest is not None
            and now - newest.last_used < _REFINE_WINDOW
            and (query.startswith(newest.query) or newest.query.startswith(query))
        ):
            newest.delete()
        SearchHistory.objects.update_or_create(query=query, defaults={"last_used": now})
        stale = SearchHistory.objects.newest_first().values_list("pk", flat=True)[HISTORY_SIZE:]
        SearchHistory.objects.filter(pk__in=list(stale)).delete()
    return True

"""Saved filters and search history in the Django admin (small tables: plain admin)."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from search.compiler import compile_query
from search.models import SavedFilter, SearchHistory
from search.parser import QueryError


def _run_link(query: str):
    url = f"{reverse('traces:list')}?{urlencode({'q': query})}"
    return format_html('<a href="{}">run</a>', url)


class SavedFilterForm(forms.ModelForm):
    class Meta:
        model = SavedFilter
        fields = ("name", "query")

    def clean_query(self) -> str:
        # The same rule as saving from the trace list: a filter that does not parse would
        # only fail later, when someone picks it from the menu.
        query = self.cleaned_data["query"].strip()
        if not query:
            raise forms.ValidationError("A saved filter needs a query.")
        try:
            compile_query(query)
        except QueryError as exc:
            raise forms.ValidationError(
                f"The query does not parse: {exc.message} (at character {exc.position + 1})"
            ) from None
        return query


@admin.register(SavedFilter)
class SavedFilterAdmin(admin.ModelAdmin):
    form = SavedFilterForm
    list_display = ("name", "query", "run", "updated", "created")
    search_fields = ("name", "query")
    readonly_fields = ("created", "updated")

    @admin.display(description="trace list")
    def run(self, saved: SavedFilter):
        return _run_link(saved.query)


@admin.register(SearchHistory)
class SearchHistoryAdmin(admin.ModelAdmin):
    list_display = ("query", "run", "last_used")
    ordering = ("-last_used",)
    search_fields = ("query",)
    readonly_fields = ("query", "last_used")

    def has_add_permission(self, request):
        return False  # the trace list records what was searched

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="trace list")
    def run(self, entry: SearchHistory):
        return _run_link(entry.query)

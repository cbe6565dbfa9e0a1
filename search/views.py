"""Saved filters and search history: small forms beside the trace list's search box."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from search.compiler import compile_query
from search.models import SavedFilter, SearchHistory
from search.parser import QueryError
from traces.htmx import toast

NAME_CHARS = 100


def menus_context() -> dict:
    """What the saved-filter and history menus list."""
    return {
        "saved_filters": list(SavedFilter.objects.all()),
        "history": list(SearchHistory.objects.newest_first().values_list("query", flat=True)),
        "menu_error": "",
        "keep_open": False,
    }


def _name_error(name: str, *, exclude: int | None = None) -> str | None:
    if not name:
        return "give the filter a name"
    if len(name) > NAME_CHARS:
        return f"a name is at most {NAME_CHARS} characters"
    taken = SavedFilter.objects.filter(name=name).exclude(pk=exclude).exists()
    return f"a saved filter named “{name}” already exists" if taken else None


def _answer(
    request: HttpRequest, *, message: str, error: bool = False, q: str = ""
) -> HttpResponse:
    """The refreshed menus for htmx (with a toast); otherwise back to the list."""
    level = "error" if error else "success"
    if request.htmx:
        context = {**menus_context(), "menu_error": message if error else "", "keep_open": True}
        response = render(
            request, "search/_saved.html", {**context, "q": q}, status=400 if error else 200
        )
        return toast(response, message, level)
    (messages.error if error else messages.success)(request, message)
    target = reverse("traces:list")
    return redirect(f"{target}?{urlencode({'q': q})}" if q else target)


@require_POST
def saved_filter_create(request: HttpRequest) -> HttpResponse:
    name = request.POST.get("name", "").strip()
    query = request.POST.get("q", "").strip()
    problem = _name_error(name)
    if problem is None and not query:
        problem = "there is no search to save: type a query first"
    if problem is None:
        try:
            compile_query(query)
        except QueryError as exc:
            problem = f"the query does not parse: {exc.message}"
    if problem:
        return _answer(request, message=f"Not saved: {problem}", error=True, q=query)
    SavedFilter.objects.create(name=name, query=query)
    return _answer(request, message=f"Saved “{name}”", q=query)


@require_POST
def saved_filter_rename(request: HttpRequest, pk: int) -> HttpResponse:
    saved = get_object_or_404(SavedFilter, pk=pk)
    name = request.POST.get("name", "").strip()
    problem = _name_error(name, exclude=saved.pk)
    if problem:
        return _answer(request, message=f"Not renamed: {problem}", error=True)
    old, saved.name = saved.name, name
    saved.save(update_fields=["name", "updated"])
    return _answer(request, message=f"Renamed “{old}” to “{name}”")


@require_POST
def saved_filter_delete(request: HttpRequest, pk: int) -> HttpResponse:
    saved = get_object_or_404(SavedFilter, pk=pk)
    saved.delete()
    return _answer(request, message=f"Deleted saved filter “{saved.name}”")


@require_POST
def history_clear(request: HttpRequest) -> HttpResponse:
    SearchHistory.objects.all().delete()
    return _answer(request, message="Search history cleared")

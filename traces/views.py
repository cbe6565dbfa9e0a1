"""Pages: dashboard, trace list, trace detail and span details.

Each URL serves its whole page, and (when htmx asks) only the fragment that changes, from
an inline partial of the same template, so reload, back and bookmarks give the same view.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from search.compiler import compile_query
from search.filters import TraceFilter
from search.models import history_record
from search.parser import FIELDS, KEYED_FIELDS, QueryError
from search.views import menus_context
from traces.compare import compare, summary
from traces.conversation import conversation
from traces.htmx import toast
from traces.models import Span, Trace, is_trace_id
from traces.pricing import explain
from traces.services import traces_delete
from traces.spans import attribute_groups, exception_events, plain_events, safe_links
from traces.timeline import WINDOW, axis_ticks, lay_out, load_lines, narrow

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "all": None}
DEFAULT_WINDOW = "24h"
PAGE_SIZE = 50
# Sort keys a user may ask for, mapped to our own column names (never user text as a field).
SORTS = {
    "start": "start_ns", "duration": "duration_ns", "spans": "span_count",
    "errors": "error_count", "tokens": "total_tokens", "cost": "cost",
}  # fmt: skip
LIST_WINDOWS = ("15m", "1h", "24h", "7d", "30d")
MAX_BULK = 1000
MAX_PAGE = 1_000_000  # keeps OFFSET inside what every database accepts


def _fragment(request: HttpRequest) -> bool:
    """An htmx request for a fragment (not a history restore, which needs the full page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def _whole(value: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() then refuses."""
    return bool(re.fullmatch(r"[0-9]{1,12}", value))


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        context = {"window": DEFAULT_WINDOW, "windows": WINDOWS, "error": _window_error(window)}
        return render(request, "traces/dashboard.html", context, status=400)
    base_url = request.build_absolute_uri("/").rstrip("/")
    context = {**dashboard_context(window, base_url=base_url), "live_url": _live_url(request)}
    template = "traces/dashboard.html#stats" if _fragment(request) else "traces/dashboard.html"
    return render(request, template, context)


def dashboard_context(window: str, *, base_url: str) -> dict:
    """The dashboard's figures for one of ``WINDOWS``: for the page and its live updates."""
    traces = Trace.objects.all()
    if WINDOWS[window] is not None:
        traces = traces.started_between(since=timezone.now() - WINDOWS[window])
    overview = traces.overview()
    stats = traces.stats(totals=overview["totals"])
    stats["cost_per_trace"] = stats["cost"] / stats["traces"] if stats["traces"] else None
    return {
        "window": window,
        "windows": WINDOWS,
        "stats": stats,
        # An install that never received a trace gets the how-to-send panel instead.
        "empty_install": stats["traces"] == 0 and not Trace.objects.exists(),
        "recent": traces.newest_first()[:8],
        "recent_errors": traces.with_errors().newest_first()[:8],
        "top_services": overview["top_services"],
        "top_workflows": overview["top_workflows"],
        "endpoint": f"{base_url}/v1/traces",
        "base_url": base_url,
    }


def _live_url(request: HttpRequest, *parts: str) -> str:
    """The page's live-updates socket (traces.consumers.PageConsumer): its kind, its query."""
    kind = "/".join(parts or [request.resolver_match.url_name])
    query = request.GET.urlencode()
    return f"/ws/pages/{kind}" + (f"?{query}" if query else "")


def _window_error(value: str) -> str:
    return f"window must be one of {', '.join(WINDOWS)}; got {value[:40]!r}"


@dataclass(slots=True)
class ListPage:
    """One page of the list. It does not count the whole result: that can take seconds for
    a query that scans spans, so the page shows at once and the total arrives separately."""

    number: int
    traces: list[Trace]
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def start_index(self) -> int:
        return (self.number - 1) * PAGE_SIZE + 1

    @property
    def end_index(self) -> int:
        return self.start_index + len(self.traces) - 1


@dataclass(slots=True)
class ListQuery:
    """What the list's parameters ask for, checked once for the page and its live rows."""

    q: str
    query_error: QueryError | None
    sort: str
    page_number: str
    errors: list[str]
    queryset: QuerySet | None  # ordered as asked; None when a parameter is invalid

    @property
    def newest_first_page_one(self) -> bool:
        """New traces belong at the top of what is shown (where live rows are inserted)."""
        return self.queryset is not None and self.sort == "-start" and int(self.page_number) == 1


def list_query(params: QueryDict) -> ListQuery:
    """The list's filters, query, sort and page from ``params``; errors instead of guesses."""
    filterset = TraceFilter(params, queryset=Trace.objects.all())
    errors: list[str] = []
    if not filterset.is_valid():
        errors += [f"{name}: {problems[0]}" for name, problems in filterset.errors.items()]
    q = params.get("q", "")
    query_error = None
    try:
        query = compile_query(q)
    except QueryError as exc:
        query_error = exc
        errors.append(f"Search: {exc.message}")
    sort = params.get("sort", "-start")
    if sort.removeprefix("-") not in SORTS:
        errors.append(f"sort must be one of {', '.join(SORTS)} (prefix - for descending)")
    page_number = params.get("page", "1")
    if not _whole(page_number) or not 1 <= int(page_number) <= MAX_PAGE:
        problem = f"page must be a whole number from 1 to {MAX_PAGE:,}"
        errors.append(f"{problem}; got {page_number[:20]!r}")
    queryset = None
    if not errors:
        column = SORTS[sort.removeprefix("-")]
        ordering = (f"-{column}", "-trace_id") if sort.startswith("-") else (column, "trace_id")
        queryset = filterset.qs.filter(query).order_by(*ordering)
    return ListQuery(q, query_error, sort, page_number, errors, queryset)


def _list_context(request: HttpRequest, *, rows: bool = True) -> tuple[dict, int]:
    """The trace list for the request's filters, query, sort and page; status 400 if invalid."""
    asked = list_query(request.GET)
    context = {
        "filters": request.GET,
        "q": asked.q,
        "query_error": asked.query_error,
        "query_caret": " " * asked.query_error.position + "^" if asked.query_error else "",
        "sort": asked.sort,
        "errors": asked.errors,
        "list_windows": LIST_WINDOWS,
        # For autocomplete: every field the language knows; keyed ones end in a dot.
        "query_fields": " ".join(f"{f}." if f in KEYED_FIELDS else f for f in FIELDS),
    }
    if asked.queryset is None:
        # Never show an unfiltered list for a filter that did not apply.
        return {**context, "page": None, "traces": [], "columns": _columns("-start")}, 400
    queryset = asked.queryset
    if not rows:
        return {**context, "queryset": queryset}, 200
    number = int(asked.page_number)
    start = (number - 1) * PAGE_SIZE
    traces = list(queryset[start : start + PAGE_SIZE + 1])  # one more tells if there is a next
    page = ListPage(number, traces[:PAGE_SIZE], len(traces) > PAGE_SIZE)
    longest = max((trace.duration_ns for trace in page.traces), default=0)
    for trace in page.traces:
        trace.bar = f"{trace.duration_ns / longest * 100:.1f}" if longest else "0"
    context.update(page=page, traces=page.traces, columns=_columns(asked.sort), queryset=queryset)
    return context, 200


_COLUMNS = (
    ("start", "Started", False, ""), ("name", "Workflow / root", False, None),
    ("service", "Service", False, None), ("duration", "Duration", True, ""),
    ("spans", "Spans", True, ""), ("errors", "Errors", True, "Spans with status ERROR"),
    ("tokens", "Tokens", True, "Input + output tokens"), ("cost", "Cost", True, ""),
    ("models", "Models", False, None),
)  # fmt: skip


def _columns(sort: str) -> list[dict]:
    """Table headers: which sort each header's link asks for, and which one is active."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    columns = []
    for name, label, numeric, tooltip in _COLUMNS:
        sortable = tooltip is not None
        active = sortable and name == key
        # First click sorts descending (biggest, newest first); a second click flips it.
        next_sort = name if active and descending else f"-{name}"
        columns.append(
            {
                "label": label, "numeric": numeric, "sortable": sortable, "tooltip": tooltip,
                "active": active, "descending": descending, "next_sort": next_sort,
            }
        )  # fmt: skip
    return columns


def _choices(column: str, current: str) -> list[str]:
    values = list(
        Trace.objects.exclude(**{column: ""})
        .order_by(column)
        .values_list(column, flat=True)
        .distinct()[:200]
    )
    if current and current not in values:
        values.append(current)  # a bookmarked value that no longer exists still shows
    return values


@require_GET
def trace_list(request: HttpRequest) -> HttpResponse:
    if request.GET.get("count") == "1":
        # The total, asked for by the page once its rows are shown.
        context, status = _list_context(request, rows=False)
        if status != 200:
            return HttpResponse("?", status=status, content_type="text/plain")
        return HttpResponse(f"{context['queryset'].count():,}", content_type="text/plain")
    context, status = _list_context(request)
    context["history_changed"] = status == 200 and history_record(query=context["q"])
    context.update(menus_context())
    context["live_url"] = _live_url(request)
    if _fragment(request):
        return render(request, "traces/list.html#results", context, status=status)
    context["services"] = _choices("service_name", request.GET.get("service", ""))
    context["workflows"] = _choices("workflow_name", request.GET.get("workflow", ""))
    return render(request, "traces/list.html", context, status=status)


@require_POST
def trace_bulk_delete(request: HttpRequest) -> HttpResponse:
    ids = request.POST.getlist("ids")
    bad = [value for value in ids if not is_trace_id(value)]
    if not ids or bad or len(ids) > MAX_BULK:
        message = (
            "select at least one trace"
            if not ids
            else f"at most {MAX_BULK} traces at a time"
            if not bad
            else f"not a trace id: {bad[0][:40]!r}"
        )
        if request.htmx:
            return toast(HttpResponse(status=204), message, "error")
        return render(request, "traces/confirm_delete.html", {"error": message}, status=400)
    if not (request.htmx or request.POST.get("confirmed") == "yes"):
        # Without JavaScript the confirmation is a page; with it, htmx asked already.
        traces = Trace.objects.filter(pk__in=ids).newest_first()
        context = {"traces": traces, "next": _safe_next(request)}
        return render(request, "traces/confirm_delete.html", context)
    deleted = traces_delete(trace_ids=ids)
    message = f"Deleted {deleted} trace{'s' if deleted != 1 else ''}"
    if request.htmx:
        response = HttpResponse(status=204)
        trigger_client_event(response, "msgtrace:refresh", {})
        return toast(response, message, "success")
    messages.success(request, message)
    return redirect(_safe_next(request))


def _safe_next(request: HttpRequest) -> str:
    # Only our own list with a query string: never a user-chosen host or scheme.
    target = request.POST.get("next", "")
    list_url = reverse("traces:list")
    if target.startswith(list_url + "?") or target == list_url:
        return target
    return list_url


MAX_FILTER_CHARS = 200


def timeline_params_error(params: QueryDict) -> str | None:
    """What is wrong with the timeline's parameters, if anything (never silently ignored)."""
    if params.get("offset", "") and not _whole(params["offset"]):
        return f"offset must be a whole number ≥ 0; got {params['offset'][:20]!r}"
    if params.get("view", "timeline") not in ("timeline", "tree"):
        return f"view must be timeline or tree; got {params['view'][:20]!r}"
    if params.get("dir", "") not in ("", "up", "down"):
        return f"dir must be up or down; got {params['dir'][:20]!r}"
    if len(params.get("filter", "")) > MAX_FILTER_CHARS:
        return f"filter is at most {MAX_FILTER_CHARS} characters"
    return None


def _bad_request(request: HttpRequest, message: str, trace: Trace) -> HttpResponse:
    context = {"message": message, "back": reverse("traces:detail", args=[trace.trace_id])}
    return render(request, "traces/bad_request.html", context, status=400)


def trace_context(params: QueryDict, trace: Trace, selected: str = "") -> dict:
    """Header and timeline rows for one trace: a window of rows around ``selected``."""
    layout = lay_out(load_lines(trace))
    needle = params.get("filter", "").strip()
    rows = narrow(layout, needle) if needle else layout.rows
    offset = params.get("offset", "")
    if _whole(offset):
        start = int(offset)
    else:
        index = layout.index_of(selected) if selected else None
        start = (index // WINDOW) * WINDOW if index is not None and not needle else 0
    start = min(start, max(len(rows) - 1, 0))
    shown = rows[start : start + WINDOW]
    view = "tree" if params.get("view") == "tree" else "timeline"
    # Candidates for "compare with…": other recent runs of the same workflow (or root span).
    same = (
        {"workflow_name": trace.workflow_name}
        if trace.workflow_name
        # Within the service: its index finds the newest matches without a full scan.
        else {"service_name": trace.service_name, "root_span_name": trace.root_span_name}
    )
    similar = Trace.objects.filter(**same).exclude(pk=trace.pk).newest_first()[:6]
    return {
        "trace": trace,
        "similar": similar,
        "layout": layout,
        "rows": shown,
        "row_count": len(rows),
        "window_start": start,
        "earlier": start,
        "later": max(len(rows) - start - len(shown), 0),
        "next_offset": start + len(shown),
        "prev_offset": max(start - WINDOW, 0),
        "needle": needle,
        "view": view,
        "selected": selected,
        "window_size": WINDOW,
        "direction": params.get("dir", ""),
        "detail_url": reverse("traces:detail", args=[trace.trace_id]),
        "span_base": reverse("traces:detail", args=[trace.trace_id]) + "/spans/",
    }


def _trace_or_404(request: HttpRequest, trace_id: str) -> Trace | HttpResponse:
    trace = Trace.objects.find(trace_id)
    if trace is None:
        context = {
            "trace_id": trace_id[:64],
            "span_id": "",
            "well_formed": is_trace_id(trace_id.lower()),
        }
        return render(request, "traces/not_found.html", context, status=404)
    return trace


@require_GET
def trace_detail(request: HttpRequest, trace_id: str) -> HttpResponse:
    trace = _trace_or_404(request, trace_id)
    if isinstance(trace, HttpResponse):
        return trace
    problem = timeline_params_error(request.GET)
    if problem:
        return _bad_request(request, problem, trace)
    context = trace_context(request.GET, trace)
    if _fragment(request):
        # "Show more" asks for just rows; the filter box and view switch for the timeline.
        part = "rows" if request.GET.get("offset") else "timeline"
        return render(request, f"traces/detail.html#{part}", context)
    context["live_url"] = _live_url(request, "trace", trace.trace_id)
    return render(request, "traces/detail.html", context)


@require_GET
def span_detail(request: HttpRequest, trace_id: str, span_id: str) -> HttpResponse:
    trace = _trace_or_404(request, trace_id)
    if isinstance(trace, HttpResponse):
        return trace
    problem = timeline_params_error(request.GET)
    if problem:
        return _bad_request(request, problem, trace)
    span = (
        Span.objects.select_related("price")
        .filter(trace=trace, span_id=span_id.lower()[:16])
        .first()
    )
    if span is None:
        context = {"trace": trace, "span_id": span_id[:64]}
        status = 404
        if _fragment(request):
            return render(request, "traces/_span_missing.html", context, status=status)
        return render(request, "traces/not_found.html", context, status=status)
    context = {"span": span, "trace": trace, **_span_context(trace, span)}
    if _fragment(request):
        return render(request, "traces/_span.html", context)
    page = trace_context(request.GET, trace, span.span_id)
    live_url = _live_url(request, "trace", trace.trace_id)
    return render(request, "traces/detail.html", {**page, **context, "live_url": live_url})


def _span_context(trace: Trace, span: Span) -> dict:
    parent = None
    if span.parent_span_id:
        parent = trace.spans.filter(span_id=span.parent_span_id).values("span_id", "name").first()
    return {
        "parent": parent,
        "offset_ns": span.start_ns - trace.start_ns,
        "conversation": conversation(span.attributes, span.events),
        "attribute_groups": attribute_groups(span),
        "exceptions": exception_events(span.events, span.start_ns),
        "events": plain_events(span.events, span.start_ns),
        "links": safe_links(span.links),
        "cost": explain(span),
    }


@require_POST
def trace_delete(request: HttpRequest, trace_id: str) -> HttpResponse:
    trace = _trace_or_404(request, trace_id)
    if isinstance(trace, HttpResponse):
        return trace
    if not (request.htmx or request.POST.get("confirmed") == "yes"):
        return render(request, "traces/confirm_delete.html", {"traces": [trace], "single": True})
    traces_delete(trace_ids=[trace.trace_id])
    messages.success(request, f"Deleted trace {trace.trace_id}")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("traces:list"))
    return redirect("traces:list")


COMPARE_ROWS = 300  # span pairs shown before "show all"
COMPARE_TIMELINE_ROWS = 300
# Sort keys of the compare table, each a function of a row; the default is the regression.
COMPARE_SORTS = {
    "regression": lambda row: (-row.regression_score, row.path),
    "path": lambda row: row.path,
    "a": lambda row: -(row.a.duration_ns if row.a else -1),
    "b": lambda row: -(row.b.duration_ns if row.b else -1),
    "tokens": lambda row: -abs(row.tokens_delta),
    "cost": lambda row: -abs(row.cost_delta or 0),
    "status": lambda row: (not row.status_change, row.kind == "matched", row.path),
}


def compare_inputs(request: HttpRequest) -> tuple[list[Trace] | None, str]:
    """The two traces named by ``a`` and ``b``, or a message saying what is wrong."""
    ids = [request.GET.get("a", "").strip().lower(), request.GET.get("b", "").strip().lower()]
    for name, value in zip("ab", ids, strict=True):
        if not value:
            return None, f"{name}: give the id of trace {name.upper()}"
        if not is_trace_id(value):
            return None, f"{name}: {value[:64]!r} is not a trace id (32 hex characters)"
    found = Trace.objects.in_bulk(ids)
    for name, value in zip("ab", ids, strict=True):
        if value not in found:
            return None, f"{name}: no trace {value}"
    return [found[ids[0]], found[ids[1]]], ""


@require_GET
def trace_compare(request: HttpRequest) -> HttpResponse:
    traces, problem = compare_inputs(request)
    if traces is None:
        status = 404 if problem.split(": ", 1)[1].startswith("no trace") else 400
        return render(request, "traces/compare.html", {"problem": problem}, status=status)
    a, b = traces
    sort = request.GET.get("sort", "regression")
    min_change = request.GET.get("min_change", "").strip()
    errors = []
    if sort not in COMPARE_SORTS:
        errors.append(f"sort must be one of {', '.join(COMPARE_SORTS)}")
    try:
        threshold_ns = int(float(min_change) * 1_000_000) if min_change else 0
        if threshold_ns < 0 or threshold_ns > 10**15:
            raise ValueError
    except (ValueError, OverflowError):
        errors.append(f"min_change must be a number of milliseconds ≥ 0; got {min_change[:20]!r}")
        threshold_ns = 0
    if errors:
        context = {"problem": "; ".join(errors), "a": a, "b": b}
        return render(request, "traces/compare.html", context, status=400)

    lines_a, lines_b = load_lines(a), load_lines(b)
    comparison = compare(lines_a, lines_b)
    rows = sorted(comparison.rows, key=COMPARE_SORTS[sort])
    if threshold_ns:
        rows = [
            row
            for row in rows
            if row.kind != "matched"
            or row.status_change
            or abs(row.duration_delta_ns) >= threshold_ns
        ]
    show_all = request.GET.get("all") == "1"
    # One time axis for both timelines, so equal durations have equal bars.
    scale = max(a.duration_ns, b.duration_ns, 1)
    matched = [(index, row) for index, row in enumerate(comparison.rows) if row.kind == "matched"]
    pair_a = {row.a.span_id: index for index, row in matched}
    pair_b = {row.b.span_id: index for index, row in matched}
    timelines = []
    for label, trace, lines, pairs in (("A", a, lines_a, pair_a), ("B", b, lines_b, pair_b)):
        layout = lay_out(lines, scale_ns=scale)
        shown = layout.rows[:COMPARE_TIMELINE_ROWS]
        timelines.append(
            {
                "label": label, "trace": trace, "layout": layout,
                "hidden": len(layout.rows) - len(shown),
                "rows": [(row, pairs.get(row.span.span_id, "")) for row in shown],
            }
        )  # fmt: skip
    pair_index = {id(row): index for index, row in enumerate(comparison.rows)}
    context = {
        "a": a,
        "b": b,
        "metrics": summary(a, b),
        "comparison": comparison,
        "rows": [(row, pair_index[id(row)]) for row in rows[: None if show_all else COMPARE_ROWS]],
        "row_total": len(rows),
        "show_all": show_all,
        "sort": sort,
        "min_change": min_change,
        "timelines": timelines,
        "ticks": axis_ticks(scale),
    }
    return render(request, "traces/compare.html", context)

"""The analytics page (``/analytics``) and its JSON twins (``/api/v1/analytics/...``).

Both read the same parameters through ``analytics_params`` and the same ``Report``, so the
API returns exactly the figures the page shows. A parameter that does not make sense is a
400 saying which one and why, never a page of unfiltered or guessed data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from search.compiler import compile_query
from search.parser import QueryError
from traces import analytics
from traces.analytics import BREAKDOWNS, PRESETS, Breakdown, Window
from traces.analytics_charts import charts
from traces.api import api_view, error

DEFAULT_WINDOW = "24h"
WINDOW_NAMES = (*PRESETS, "custom")
# The page sorts each table on its own; the API's ``sort`` applies to every table it returns.
PAGE_SORTS = {by: f"sort_{by}" for by in BREAKDOWNS}
TITLES = {"model": "By model", "service": "By service", "workflow": "By workflow",
          "span": "By span name"}  # fmt: skip
# What a row of each breakdown counts, and the search field a click on it filters by.
CALLS = {"model": "Calls", "service": "Traces", "workflow": "Traces", "span": "Spans"}
FIELDS = {"model": "model", "service": "service", "workflow": "workflow", "span": "span"}
_COLUMNS = (
    ("name", "Name", False, None), ("calls", None, True, None),
    ("errors", "Errors", True, None), ("error_rate", "Rate", True, "Error rate"),
    ("p50", "p50", True, "Median duration"), ("p95", "p95", True, "95th percentile duration"),
    ("tokens", "Tokens", True, "Input + output tokens"), ("cost", "Cost", True, None),
)  # fmt: skip


@dataclass
class Asked:
    """What the parameters ask for, checked; ``errors`` is (parameter, message) pairs."""

    window: Window | None
    q: str
    query: Q | None
    sorts: dict[str, str]
    errors: list[tuple[str, str]] = field(default_factory=list)
    query_error: QueryError | None = None

    @property
    def message(self) -> str:
        name, problem = self.errors[0]
        return f"{name}: {problem}"


def _moment(name: str, raw: str, errors: list) -> datetime | None:
    """An ISO 8601 date (midnight UTC) or date-time (UTC unless it says otherwise)."""
    text = raw.strip()
    if not text:
        errors.append((name, "is required with window=custom"))
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        errors.append((name, f"must be an ISO 8601 date or date-time (2026-01-31 or "
                             f"2026-01-31T12:00:00Z); got {shown!r}"))  # fmt: skip
        return None
    if moment.tzinfo is None:  # a date alone is its midnight: UTC too
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if not analytics.EARLIEST <= moment < analytics.LATEST:
        errors.append((name, f"must lie between {analytics.EARLIEST:%Y} and {analytics.LATEST:%Y}"))
        return None
    return moment


def _window(params: QueryDict, now: datetime, errors: list) -> Window | None:
    name = params.get("window", "") or DEFAULT_WINDOW
    since_raw, until_raw = params.get("since", ""), params.get("until", "")
    if name == "custom":
        since = _moment("since", since_raw, errors)
        until = _moment("until", until_raw, errors)
        if since is None or until is None:
            return None
        if since >= until:
            errors.append(("until", "must be later than since"))
            return None
        if until - since < analytics.MIN_RANGE:
            errors.append(("until", "must be at least a minute after since"))
            return None
        if until - since > analytics.MAX_RANGE:
            errors.append(("until", f"must be at most {analytics.MAX_RANGE.days} days after since"))
            return None
        return Window.custom(since, until)
    if name not in PRESETS:
        shown = name if len(name) <= 40 else name[:40] + "…"
        errors.append(("window", f"must be one of {', '.join(WINDOW_NAMES)}; got {shown!r}"))
        return None
    if since_raw or until_raw:
        errors.append(("since" if since_raw else "until", "goes with window=custom only"))
        return None
    return Window.preset(name, now)


def analytics_params(params: QueryDict, *, sort_params: dict[str, str], now: datetime) -> Asked:
    """Window, query and sorts from ``params``; ``sort_params`` maps a breakdown to the
    parameter that sorts it."""
    errors: list[tuple[str, str]] = []
    window = _window(params, now, errors)
    q = params.get("q", "")
    query = query_error = None
    try:
        query = compile_query(q, now=now)
    except QueryError as exc:
        query_error = exc
        errors.append(("q", exc.message))
    sorts = {}
    for by, name in sort_params.items():
        sort = params.get(name, "") or analytics.DEFAULT_SORT
        if sort.removeprefix("-") not in analytics.SORTS:
            shown = sort if len(sort) <= 40 else sort[:40] + "…"
            keys = ", ".join(analytics.SORTS)
            problem = f"must be one of {keys} (prefix - for descending); got {shown!r}"
            if (name, problem) not in errors:
                errors.append((name, problem))
            continue
        sorts[by] = sort
    return Asked(window, q, query, sorts, errors, query_error)


# --- Links to the trace list ----------------------------------------------------------------


def quoted(value: str) -> str:
    """``value`` as a quoted string of the search language: ``"a \\"b\\""``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def list_link(by: str, name: str, q: str, window: Window) -> str:
    """The trace list filtered to one breakdown row: its field, the query and the window.

    The search language has no escape for ``*``, so a name containing one matches as a
    glob there (a few more traces at worst, never fewer).
    """
    term = f"{FIELDS[by]}:{quoted(name)}"
    params = {"q": f"({q.strip()}) {term}" if q.strip() else term}
    if window.name in PRESETS:
        params["since"] = window.name  # the list's own "Last 24h" choice
    else:
        params["since"] = window.since.isoformat().replace("+00:00", "Z")
        params["until"] = window.until.isoformat().replace("+00:00", "Z")
    return f"{reverse('traces:list')}?{urlencode(params)}"


def _columns(by: str, sort: str, params: QueryDict) -> list[dict]:
    """Table headers: which sort each header's link asks for, and which one is active."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    columns = []
    for name, label, numeric, tooltip in _COLUMNS:
        active = name == key
        # First click sorts descending (most, slowest first), names ascending; a second flips.
        first = name if name == "name" else f"-{name}"
        flipped = name if descending else f"-{name}"
        link = params.copy()
        link[PAGE_SORTS[by]] = flipped if active else first
        columns.append(
            {
                "label": label or CALLS[by], "numeric": numeric, "tooltip": tooltip,
                "active": active, "descending": descending, "href": f"?{link.urlencode()}",
            }
        )  # fmt: skip
    return columns


def table(breakdown: Breakdown, q: str, window: Window, params: QueryDict) -> dict:
    """A breakdown as the template shows it: headers, and each row with its link."""
    rows = [(row, list_link(breakdown.by, row.name, q, window)) for row in breakdown.rows]
    return {
        "by": breakdown.by,
        "title": TITLES[breakdown.by],
        "calls": CALLS[breakdown.by],
        "param": PAGE_SORTS[breakdown.by],
        "breakdown": breakdown,
        "rows": rows,
        "other": breakdown.other,
        "columns": _columns(breakdown.by, breakdown.sort, params),
    }


# --- The page --------------------------------------------------------------------------------


def _fragment(request: HttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _page_context(asked: Asked) -> dict:
    window = asked.window
    return {
        "windows": WINDOW_NAMES,
        "window": window,
        "window_name": window.name if window else "",
        "q": asked.q,
        "errors": [f"{name}: {problem}" for name, problem in asked.errors],
        "query_error": asked.query_error,
        "query_caret": " " * asked.query_error.position + "^" if asked.query_error else "",
        # "Custom" starts from the window shown, whichever it is.
        "custom_since": _form_time(window.since) if window else "",
        "custom_until": _form_time(window.until) if window else "",
    }


def _form_time(moment: datetime) -> str:
    """A value for ``<input type=datetime-local>`` (read back as UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


@require_GET
def analytics_page(request: HttpRequest) -> HttpResponse:
    asked = analytics_params(request.GET, sort_params=PAGE_SORTS, now=timezone.now())
    context = _page_context(asked)
    fragment = _fragment(request)
    if asked.errors:
        # Never figures for parameters that did not apply: the errors, and no data.
        template = "traces/analytics.html#analytics" if fragment else "traces/analytics.html"
        return render(request, template, context, status=400)
    target = request.htmx.target if fragment else None
    by = target.removeprefix("breakdown-") if target else None
    if by in BREAKDOWNS:
        # A sort click: only that table is computed and sent.
        result = analytics.report(
            asked.window, asked.query, q=asked.q, series=False, breakdowns=[by], sorts=asked.sorts
        )
        context["table"] = table(result.breakdowns[by], asked.q, asked.window, request.GET)
        context["sort_fragment"] = True
        return render(request, "traces/analytics.html#breakdown", context)
    result = analytics.report(asked.window, asked.query, q=asked.q, sorts=asked.sorts)
    context.update(
        report=result,
        totals=result.totals,
        charts=charts(result),
        tables=[
            table(result.breakdowns[by], asked.q, asked.window, request.GET) for by in BREAKDOWNS
        ],
    )
    template = "traces/analytics.html#analytics" if fragment else "traces/analytics.html"
    return render(request, template, context)


# --- The API ---------------------------------------------------------------------------------


def _bad(asked: Asked) -> JsonResponse:
    name = asked.errors[0][0]
    extra = {"position": asked.query_error.position} if name == "q" and asked.query_error else {}
    return error(400, asked.message, parameter=name, **extra)


@api_view("GET")
def api_timeseries(request: HttpRequest) -> JsonResponse:
    asked = analytics_params(request.GET, sort_params={}, now=timezone.now())
    if asked.errors:
        return _bad(asked)
    result = analytics.report(asked.window, asked.query, q=asked.q, breakdowns=())
    return JsonResponse(result.series_dict())


def _breakdowns_asked(params: QueryDict) -> tuple[list[str], str | None]:
    """The ``by`` values (comma-separated or repeated; all four when absent), or a problem."""
    names = [name.strip() for raw in params.getlist("by") for name in raw.split(",")]
    names = [name for name in names if name]
    if not names:
        return list(BREAKDOWNS), None
    unknown = [name for name in names if name not in BREAKDOWNS]
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "…"
        return [], f"must be one or more of {', '.join(BREAKDOWNS)}; got {shown!r}"
    return [by for by in BREAKDOWNS if by in names], None


@api_view("GET")
def api_breakdown(request: HttpRequest) -> JsonResponse:
    wanted, problem = _breakdowns_asked(request.GET)
    if problem:
        return error(400, f"by: {problem}", parameter="by")
    sort_params = {by: "sort" for by in wanted}
    asked = analytics_params(request.GET, sort_params=sort_params, now=timezone.now())
    if asked.errors:
        return _bad(asked)
    result = analytics.report(
        asked.window, asked.query, q=asked.q, series=False, breakdowns=wanted, sorts=asked.sorts
    )
    return JsonResponse(result.breakdowns_dict())

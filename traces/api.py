"""The JSON API (the seed's REST surface): ``/api/v1/...`` and ``/health``."""

from __future__ import annotations

from datetime import datetime
from functools import wraps

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from search.compiler import compile_query
from search.filters import TraceFilter
from search.parser import QueryError
from traces.compare import compare as compare_traces
from traces.compare import summary
from traces.models import Span, Trace
from traces.services import traces_delete
from traces.timeline import load_lines
from traces.tree import build_tree
from traces.views import SORTS, compare_inputs

MAX_LIMIT = 1000


class ParameterError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def trace_summary(trace: Trace) -> dict:
    return {
        "trace_id": trace.trace_id,
        "start_time": _iso(trace.start_time),
        "end_time": _iso(trace.end_time),
        "start_time_unix_nano": trace.start_ns,
        "end_time_unix_nano": trace.end_ns,
        "duration_ms": trace.duration_ms,
        "span_count": trace.span_count,
        "error_count": trace.error_count,
        "service_name": trace.service_name,
        "workflow_name": trace.workflow_name,
        "root_span_name": trace.root_span_name,
        "input_tokens": trace.input_tokens,
        "output_tokens": trace.output_tokens,
        "total_tokens": trace.total_tokens,
        "cost": trace.cost,
        "unpriced_spans": trace.unpriced_count,
        "models": trace.model_names,
        "session_id": trace.session_id,
        "user_id": trace.user_id,
    }


def span_dict(span: Span) -> dict:
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id or None,
        "name": span.name,
        "kind": span.kind,
        "span_type": span.span_type,
        "start_time": _iso(span.start_time),
        "end_time": _iso(span.end_time),
        "start_time_unix_nano": span.start_ns,
        "end_time_unix_nano": span.end_ns,
        "duration_ms": span.duration_ms,
        "status": {"code": _STATUS_NAMES[span.status_code], "message": span.status_message},
        "service_name": span.service_name,
        "model": span.model,
        "provider": span.provider,
        "operation": span.operation,
        "module_name": span.module_name,
        "workflow_name": span.workflow_name,
        "session_id": span.session_id,
        "user_id": span.user_id,
        "input_tokens": span.input_tokens,
        "output_tokens": span.output_tokens,
        "total_tokens": span.total_tokens,
        "cache_read_tokens": span.cache_read_tokens,
        "cache_write_tokens": span.cache_write_tokens,
        "reasoning_tokens": span.reasoning_tokens,
        "cost": span.cost,
        "currency": span.currency,
        "cost_source": span.cost_source,
        "attributes": span.attributes,
        "events": span.events,
        "links": span.links,
        "resource_attributes": span.resource_attributes,
        "scope": span.scope,
    }


def error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def api_view(*methods: str):
    """Allow these methods (HEAD with GET); others get a JSON 405 naming the allowed ones.

    The API is for programs, not forms: no CSRF cookie check, so a wrong method is a 405
    rather than the CSRF failure page. (Authentication comes with API keys.)
    """
    allowed = {*methods, "HEAD"} if "GET" in methods else set(methods)

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                response = error(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            return view(request, *args, **kwargs)

        return csrf_exempt(wrapper)

    return decorator


def _int_param(request: HttpRequest, name: str, default: int, maximum: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParameterError(name, f"must be an integer, got {raw[:40]!r}") from None
    if value < 0 or value > maximum:
        raise ParameterError(name, f"must be between 0 and {maximum}, got {value}")
    return value


def _trace_or_404(trace_id: str) -> Trace | JsonResponse:
    trace = Trace.objects.find(trace_id)
    if trace is None:
        return error(404, f"trace {trace_id[:64]!r} not found", trace_id=trace_id[:64])
    return trace


@api_view("GET")
def trace_list(request: HttpRequest) -> JsonResponse:
    try:
        limit = _int_param(request, "limit", 50, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 10_000_000)
    except ParameterError as exc:
        return error(400, f"{exc.name}: {exc.message}", parameter=exc.name)
    filterset = TraceFilter(request.GET, queryset=Trace.objects.newest_first())
    if not filterset.is_valid():
        field, messages = next(iter(filterset.errors.items()))
        return error(400, f"{field}: {messages[0]}", parameter=field)
    try:
        query = compile_query(request.GET.get("q", ""))
    except QueryError as exc:
        # Never run unfiltered: a query that does not parse is an error, saying where.
        return error(400, f"q: {exc.message}", parameter="q", position=exc.position)
    sort = request.GET.get("sort") or "-start"
    if sort.removeprefix("-") not in SORTS:
        message = f"must be one of {', '.join(SORTS)} (prefix - for descending), got {sort[:40]!r}"
        return error(400, f"sort: {message}", parameter="sort")
    # The trace id breaks ties, so pages of equal durations (or costs) never overlap.
    column = SORTS[sort.removeprefix("-")]
    ordering = (f"-{column}", "-trace_id") if sort.startswith("-") else (column, "trace_id")
    queryset = filterset.qs.filter(query).order_by(*ordering)
    traces = list(queryset[offset : offset + limit])
    return JsonResponse(
        {
            "traces": [trace_summary(trace) for trace in traces],
            "total": queryset.count(),
            "limit": limit,
            "offset": offset,
        }
    )


@api_view("GET", "DELETE")
def trace_detail(request: HttpRequest, trace_id: str) -> JsonResponse:
    trace = _trace_or_404(trace_id)
    if isinstance(trace, JsonResponse):
        return trace
    if request.method == "DELETE":
        traces_delete(trace_ids=[trace.trace_id])
        return JsonResponse({"deleted": trace.trace_id})
    spans = trace.spans.in_tree_order()
    return JsonResponse({**trace_summary(trace), "spans": [span_dict(span) for span in spans]})


@api_view("GET")
def trace_tree(request: HttpRequest, trace_id: str) -> JsonResponse:
    trace = _trace_or_404(trace_id)
    if isinstance(trace, JsonResponse):
        return trace
    spans = list(trace.spans.in_tree_order())
    return JsonResponse(build_tree(spans, span_dict), safe=False)


def stats_data() -> dict:
    """All-time totals: ``GET /api/v1/stats`` and the live ``stats_updated`` event."""
    stats = Trace.objects.stats()
    p50, p95 = stats["p50_ns"], stats["p95_ns"]
    return {
        "total_traces": stats["traces"],
        "total_spans": stats["spans"],
        "traces_with_errors": stats["traces_with_errors"],
        "error_rate": stats["error_rate"],
        "input_tokens": stats["input_tokens"],
        "output_tokens": stats["output_tokens"],
        "total_tokens": stats["total_tokens"],
        "cost": stats["cost"],
        "unpriced_spans": stats["unpriced_spans"],
        "p50_duration_ms": p50 / 1e6 if p50 is not None else None,
        "p95_duration_ms": p95 / 1e6 if p95 is not None else None,
    }


@api_view("GET")
def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(stats_data())


@api_view("GET")
def compare(request: HttpRequest) -> JsonResponse:
    traces, problem = compare_inputs(request)
    if traces is None:
        parameter, message = problem.split(": ", 1)
        status = 404 if message.startswith("no trace") else 400
        return error(status, problem, parameter=parameter)
    a, b = traces
    comparison = compare_traces(load_lines(a), load_lines(b))
    return JsonResponse(
        {
            "a": trace_summary(a),
            "b": trace_summary(b),
            "summary": [metric.to_dict() for metric in summary(a, b)],
            **comparison.to_dict(),
        }
    )


@api_view("GET")
def health(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure to reach the database means unhealthy
        return JsonResponse({"status": "error", "database": type(exc).__name__}, status=503)
    return JsonResponse({"status": "ok", "database": connection.vendor})

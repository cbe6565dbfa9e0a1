"""A Python client for msgtrace's JSON API.

::

    from traces.client import Client

    client = Client("http://127.0.0.1:4321")
    for trace in client.traces(q="error:true", since="1h", sort="-duration", limit=5):
        print(trace.trace_id, trace.name, trace.duration_ms)

Standard library only (urllib and json), so installing msgtrace for its client adds no
dependency to an app. Answers come back as dataclasses; any failure raises a
``MsgtraceError`` carrying the HTTP status and the server's own message (a query's syntax
error says where it is). The reference is docs/client.md.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_URL = "http://127.0.0.1:4321"
PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000  # the API's largest page


class MsgtraceError(Exception):
    """A call that failed. ``status`` is the HTTP status, or None when no answer came."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        parameter: str | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.parameter = parameter  # the query parameter a 400 is about, e.g. "q"
        self.position = position  # where in ``q`` a query's syntax error is


class BadRequestError(MsgtraceError):
    """400: a parameter the server refused (``parameter`` names it)."""


class NotFoundError(MsgtraceError):
    """404: no trace with that id."""


class AuthenticationError(MsgtraceError):
    """401: the server wants an API key (or this one is wrong or revoked)."""


class UnreachableError(MsgtraceError):
    """The server did not answer: wrong URL, not running, or a timeout."""


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _build(cls, data: dict, **converted):
    """``cls`` from an API object: known keys only, so fields a newer server adds are
    ignored and ones an older server lacks take their defaults (or None)."""
    values = {}
    for item in fields(cls):
        if item.name in converted:
            values[item.name] = converted[item.name]
        elif item.name in data:
            values[item.name] = data[item.name]
        elif item.default is not MISSING:
            values[item.name] = item.default
        elif item.default_factory is not MISSING:
            values[item.name] = item.default_factory()
        else:
            values[item.name] = None
    return cls(**values)


@dataclass(frozen=True)
class TraceSummary:
    """One trace's figures, as the list returns them (docs/api.md, trace summary fields)."""

    trace_id: str
    start_time: datetime | None
    end_time: datetime | None
    start_time_unix_nano: int
    end_time_unix_nano: int
    duration_ms: float
    span_count: int
    error_count: int
    service_name: str
    workflow_name: str
    root_span_name: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float
    # Spans with tokens but no known price, left out of ``cost`` (docs/costs.md).
    unpriced_spans: int = 0
    models: list[str] = field(default_factory=list)
    session_id: str = ""
    user_id: str = ""

    @property
    def has_errors(self) -> bool:
        return bool(self.error_count)

    @property
    def name(self) -> str:
        """What the trace is called on the pages: its workflow, else its root span."""
        return self.workflow_name or self.root_span_name

    @classmethod
    def from_json(cls, data: dict) -> TraceSummary:
        return _build(
            cls,
            data,
            start_time=_time(data.get("start_time")),
            end_time=_time(data.get("end_time")),
        )


@dataclass(frozen=True)
class Span:
    """One span with everything it was sent with (docs/api.md, span fields)."""

    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    span_type: str
    start_time: datetime | None
    end_time: datetime | None
    start_time_unix_nano: int
    end_time_unix_nano: int
    duration_ms: float
    status_code: str  # "UNSET", "OK" or "ERROR"
    status_message: str
    service_name: str
    model: str = ""
    provider: str = ""
    operation: str = ""
    module_name: str = ""
    workflow_name: str = ""
    session_id: str = ""
    user_id: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None  # None: no cost is known (not the same as 0)
    currency: str = ""
    cost_source: str = ""  # "span", "price", "unpriced" or "" (no tokens): docs/costs.md
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.status_code == "ERROR"

    @classmethod
    def from_json(cls, data: dict) -> Span:
        status = data.get("status") or {}
        return _build(
            cls,
            data,
            start_time=_time(data.get("start_time")),
            end_time=_time(data.get("end_time")),
            status_code=status.get("code", "UNSET"),
            status_message=status.get("message", ""),
        )


@dataclass(frozen=True)
class Trace(TraceSummary):
    """A trace's summary and all of its spans, by start time."""

    spans: list[Span] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> Trace:
        return _build(
            cls,
            data,
            start_time=_time(data.get("start_time")),
            end_time=_time(data.get("end_time")),
            spans=[Span.from_json(span) for span in data.get("spans", [])],
        )


@dataclass(frozen=True)
class SpanNode:
    """A node of a trace's span tree; children by start time.

    ``span`` is None only on the placeholder that stands for a root that never arrived
    (``missing_root``); ``orphan`` marks a span whose parent never arrived, hung under the
    root; ``depth_limited`` one that sat deeper than the server nests (100 levels).
    """

    span: Span | None
    children: list[SpanNode] = field(default_factory=list)
    orphan: bool = False
    missing_root: bool = False
    depth_limited: bool = False

    def walk(self) -> Iterator[tuple[int, SpanNode]]:
        """(depth, node) for this node and everything under it, depth first, in order."""
        stack = [(0, self)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            stack.extend((depth + 1, child) for child in reversed(node.children))

    @classmethod
    def from_json(cls, data: dict) -> SpanNode:
        span = data.get("span")
        return cls(
            span=Span.from_json(span) if span is not None else None,
            children=[cls.from_json(child) for child in data.get("children", [])],
            orphan=bool(data.get("orphan")),
            missing_root=bool(data.get("missing_root")),
            depth_limited=bool(data.get("depth_limited")),
        )


@dataclass(frozen=True)
class Stats:
    """Totals over every stored trace (``GET /api/v1/stats``)."""

    total_traces: int
    total_spans: int
    traces_with_errors: int
    error_rate: float
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float
    p50_duration_ms: float | None  # None when there are no traces
    p95_duration_ms: float | None
    unpriced_spans: int = 0

    @classmethod
    def from_json(cls, data: dict) -> Stats:
        return _build(cls, data)


@dataclass(frozen=True)
class ComparisonMetric:
    """A headline figure of B against A, in the trace's units (durations in ns)."""

    metric: str
    a: float
    b: float
    delta: float
    percent: float | None  # None when A's figure is 0
    trend: str  # "worse", "better", "neutral", "same" or "new"


@dataclass(frozen=True)
class ComparedSpan:
    span_id: str
    name: str
    duration_ms: float
    tokens: int
    cost: float | None
    is_error: bool


@dataclass(frozen=True)
class ComparisonRow:
    """One place in the merged tree: a span of both runs, or of only one."""

    kind: str  # "matched", "added" (only in B) or "removed" (only in A)
    path: str
    depth: int
    renamed: bool
    a: ComparedSpan | None
    b: ComparedSpan | None
    duration_delta_ms: float | None
    tokens_delta: int | None
    cost_delta: float | None
    status_change: str

    @classmethod
    def from_json(cls, data: dict) -> ComparisonRow:
        def side(value: dict | None) -> ComparedSpan | None:
            return _build(ComparedSpan, value) if value is not None else None

        return _build(cls, data, a=side(data.get("a")), b=side(data.get("b")))


@dataclass(frozen=True)
class NameAggregate:
    """Spans of one name in each run: count, total and mean duration."""

    name: str
    a_count: int
    a_total_ms: float
    a_mean_ms: float | None
    b_count: int
    b_total_ms: float
    b_mean_ms: float | None


@dataclass(frozen=True)
class Comparison:
    """Run B against run A (``GET /api/v1/compare``), as the compare page shows it."""

    a: TraceSummary
    b: TraceSummary
    summary: list[ComparisonMetric]
    matched: int
    added: int
    removed: int
    status_changes: int
    rows: list[ComparisonRow]
    aggregates: list[NameAggregate]

    @classmethod
    def from_json(cls, data: dict) -> Comparison:
        return _build(
            cls,
            data,
            a=TraceSummary.from_json(data["a"]),
            b=TraceSummary.from_json(data["b"]),
            summary=[_build(ComparisonMetric, item) for item in data.get("summary", [])],
            rows=[ComparisonRow.from_json(row) for row in data.get("rows", [])],
            aggregates=[_build(NameAggregate, item) for item in data.get("aggregates", [])],
        )


class TraceResults:
    """The traces a filter matches, fetched a page at a time as they are iterated.

    ``total`` is how many matched when the first page was read. A trace that arrives
    while you iterate can shift later pages; no trace is yielded twice.
    """

    def __init__(self, client: Client, params: dict, limit: int | None, page_size: int):
        self._client = client
        self._params = params
        self._limit = limit
        self._page_size = page_size
        first = self._page(0)  # at once, so a bad query raises here, not mid-iteration
        self.total: int = first["total"]
        self._iterator = self._iterate(first)

    def _size(self, offset: int) -> int:
        if self._limit is None:
            return self._page_size
        return min(self._page_size, self._limit - offset)

    def _page(self, offset: int) -> dict:
        params = {**self._params, "limit": self._size(offset), "offset": offset}
        return self._client._get("/api/v1/traces", params)

    def _iterate(self, page: dict) -> Iterator[TraceSummary]:
        seen: set[str] = set()
        offset = 0
        while True:
            for item in page["traces"]:
                if item["trace_id"] not in seen:
                    seen.add(item["trace_id"])
                    yield TraceSummary.from_json(item)
            offset += len(page["traces"])
            asked = page["limit"]
            if len(page["traces"]) < asked or offset >= page["total"] or not self._size(offset):
                return
            page = self._page(offset)

    def __iter__(self) -> Iterator[TraceSummary]:
        return self._iterator

    def __next__(self) -> TraceSummary:
        return next(self._iterator)


def _moment(value: str | datetime | timedelta | None) -> str | None:
    """The API's ``since``/``until``: text as given, a datetime as ISO 8601 (naive is UTC),
    a timedelta as that long before now."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class Client:
    """msgtrace's JSON API at ``url``. ``api_key`` is sent as ``Authorization: Bearer``;
    None (the default) takes it from the ``MSGTRACE_API_KEY`` environment variable."""

    def __init__(
        self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 30.0
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "User-Agent": "msgtrace-client"}
        if api_key is None:
            api_key = os.environ.get("MSGTRACE_API_KEY", "").strip()
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- the API ---------------------------------------------------------------------

    def traces(
        self,
        q: str | None = None,
        *,
        since: str | datetime | timedelta | None = None,
        until: str | datetime | timedelta | None = None,
        service: str | None = None,
        workflow: str | None = None,
        has_errors: bool | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        sort: str | None = None,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> TraceResults:
        """Trace summaries matching all the filters given, newest first unless ``sort``.

        ``q`` is a search query (docs/query-language.md); ``since``/``until`` take ISO 8601
        text, ``"15m"``-style text, a datetime or a timedelta; durations are milliseconds;
        ``sort`` is ``start``, ``duration``, ``spans``, ``errors``, ``tokens`` or ``cost``
        (``-`` first for descending). ``limit`` caps how many are yielded (None: all).
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a whole number, 0 or more, got {limit!r}")
        if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size!r}")
        params = {
            "q": q,
            "since": _moment(since),
            "until": _moment(until),
            "service": service,
            "workflow": workflow,
            "has_errors": None if has_errors is None else str(bool(has_errors)).lower(),
            "min_duration": min_duration,
            "max_duration": max_duration,
            "sort": sort,
        }
        params = {key: value for key, value in params.items() if value not in (None, "")}
        return TraceResults(self, params, limit, page_size)

    def count(self, q: str | None = None, **filters: Any) -> int:
        """How many traces match (the same filters as ``traces``)."""
        return self.traces(q, limit=0, **filters).total

    def trace(self, trace_id: str) -> Trace:
        """One trace and all its spans; NotFoundError if there is none with that id."""
        return Trace.from_json(self._get(f"/api/v1/traces/{self._quote(trace_id)}"))

    def tree(self, trace_id: str) -> SpanNode:
        """The trace's spans as a tree, from the root down."""
        return SpanNode.from_json(self._get(f"/api/v1/traces/{self._quote(trace_id)}/tree"))

    def stats(self) -> Stats:
        return Stats.from_json(self._get("/api/v1/stats"))

    def delete(self, trace_id: str) -> None:
        """Delete the trace and its spans; NotFoundError if there is none with that id."""
        self._request("DELETE", f"/api/v1/traces/{self._quote(trace_id)}")

    def compare(self, a: str, b: str) -> Comparison:
        """Run ``b`` against run ``a``."""
        return Comparison.from_json(self._get("/api/v1/compare", {"a": a, "b": b}))

    def health(self) -> dict:
        """``{"status": "ok", "database": "sqlite"}``; MsgtraceError (503) when unhealthy."""
        return self._get("/health")

    # --- HTTP ------------------------------------------------------------------------

    @staticmethod
    def _quote(trace_id: str) -> str:
        return urllib.parse.quote(str(trace_id), safe="")

    def _get(self, path: str, params: dict | None = None) -> Any:
        return self._request("GET", path, params)

    def _request(self, method: str, path: str, params: dict | None = None) -> Any:
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        # http(s) only: __init__ refuses any other scheme.
        request = urllib.request.Request(url, method=method, headers=self._headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, method, path) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise UnreachableError(f"cannot reach msgtrace at {self.url}: {reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise UnreachableError(f"cannot reach msgtrace at {self.url}: {exc}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise MsgtraceError(
                f"{method} {path} did not answer JSON: is {self.url} a msgtrace server?",
                status=200,
            ) from None

    def _http_error(self, exc: urllib.error.HTTPError, method: str, path: str) -> MsgtraceError:
        try:
            data = json.loads(exc.read())
        except (ValueError, OSError):
            data = None
        if not isinstance(data, dict) or "error" not in data:
            # Not msgtrace's JSON: a proxy's page, or another server on that port.
            message = f"{method} {path}: HTTP {exc.code} {exc.reason}"
            return MsgtraceError(message, status=exc.code)
        cls = {400: BadRequestError, 401: AuthenticationError, 404: NotFoundError}.get(
            exc.code, MsgtraceError
        )
        message = str(data["error"])
        if exc.code == 401 and "Authorization" not in self._headers:
            message += " (no API key was sent: set MSGTRACE_API_KEY)"
        return cls(
            message,
            status=exc.code,
            parameter=data.get("parameter"),
            position=data.get("position"),
        )

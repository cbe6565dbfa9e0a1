"""What ``msgtrace stats``, ``list`` and ``show`` print, read from the database or a server.

Both sources hand back the client's dataclasses (traces.client), built from the same
dicts the JSON API serves, so one renderer draws either and the terminal shows what the
API would. Layout is plain text: colour only through ``paint``, which the commands make a
no-op unless stdout is a terminal.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.core.management.base import CommandError
from django.db import DatabaseError, connection

from search.compiler import compile_query
from search.parser import QueryError
from traces.api import span_dict, stats_data, trace_summary
from traces.client import (
    Client,
    MsgtraceError,
    NotFoundError,
    SpanNode,
    Stats,
    TraceSummary,
)
from traces.models import Trace
from traces.tree import build_tree

Paint = Callable[[str, str], str]  # (role, text) -> text; roles: "error", "dim", "bar", "head"


def no_paint(role: str, text: str) -> str:
    return text


def painter(style) -> Paint:
    """Colours from a command's ``style``, which Django leaves plain unless stdout is a
    terminal that takes them (and --no-color is not given)."""
    roles = {"error": style.ERROR, "head": style.MIGRATE_LABEL, "dim": style.HTTP_NOT_MODIFIED}
    return lambda role, text: roles[role](text) if role in roles else text


def terminal_width(stdout) -> int | None:
    """The terminal's width when writing to one; piped output keeps its columns whole."""
    return shutil.get_terminal_size().columns if stdout.isatty() else None


# --- where the data comes from ---------------------------------------------------------------


class LocalSource:
    """The configured database (MSGTRACE_DB_PATH or MSGTRACE_DATABASE_URL), read directly."""

    def __init__(self) -> None:
        settings = connection.settings_dict
        if connection.vendor == "sqlite":
            self.where = f"SQLite {settings['NAME']}"
            # Connecting would create an empty file and then fail on a missing table.
            name = str(settings["NAME"])
            if not connection.creation.is_in_memory_db(name) and not Path(name).exists():
                raise CommandError(
                    f"no msgtrace database at {settings['NAME']}: run the command where "
                    "`msgtrace start` keeps it, set MSGTRACE_DB_PATH, or pass --url"
                )
        else:
            self.where = f"PostgreSQL {settings['HOST'] or 'localhost'}/{settings['NAME']}"

    def _read(self, read: Callable):
        try:
            return read()
        except DatabaseError as exc:
            raise CommandError(
                f"cannot read the msgtrace database ({self.where}): {exc}".strip()
                + " (has `msgtrace start` run against it?)"
            ) from None

    def stats(self) -> Stats:
        return Stats.from_json(self._read(stats_data))

    def traces(self, q: str, limit: int) -> tuple[list[TraceSummary], int]:
        try:
            query = compile_query(q)
        except QueryError as exc:
            raise CommandError(query_error(q, exc.message, exc.position)) from None

        def read():
            queryset = Trace.objects.newest_first().filter(query)
            return [trace_summary(trace) for trace in queryset[:limit]], queryset.count()

        rows, total = self._read(read)
        return [TraceSummary.from_json(row) for row in rows], total

    def trace_tree(self, trace_id: str) -> tuple[TraceSummary, SpanNode]:
        def read():
            trace = Trace.objects.find(trace_id)
            if trace is None:
                return None, None
            spans = list(trace.spans.in_tree_order())
            return trace_summary(trace), build_tree(spans, span_dict)

        summary, tree = self._read(read)
        if summary is None:
            raise CommandError(not_found(trace_id))
        return TraceSummary.from_json(summary), SpanNode.from_json(tree)


class RemoteSource:
    """A msgtrace server's JSON API, through the Python client."""

    def __init__(self, url: str) -> None:
        try:
            self.client = Client(url, timeout=60)
        except ValueError as exc:
            raise CommandError(f"--url: {exc}") from None
        self.where = self.client.url

    def _call(self, call: Callable):
        try:
            return call()
        except MsgtraceError as exc:
            raise CommandError(exc.message) from None

    def stats(self) -> Stats:
        return self._call(self.client.stats)

    def traces(self, q: str, limit: int) -> tuple[list[TraceSummary], int]:
        def call():
            results = self.client.traces(q or None, limit=limit, page_size=min(limit, 1000))
            return list(results), results.total

        try:
            return call()
        except MsgtraceError as exc:
            if exc.parameter == "q" and exc.position is not None:
                message = exc.message.removeprefix("q: ")
                raise CommandError(query_error(q, message, exc.position)) from None
            raise CommandError(exc.message) from None

    def trace_tree(self, trace_id: str) -> tuple[TraceSummary, SpanNode]:
        try:
            return self.client.trace(trace_id), self.client.tree(trace_id)
        except NotFoundError:
            raise CommandError(not_found(trace_id)) from None
        except MsgtraceError as exc:
            raise CommandError(exc.message) from None


def add_url_argument(parser) -> None:
    """The ``--url`` option of the commands that read either the database or a server."""
    parser.add_argument(
        "--url",
        help="a msgtrace server to ask instead of the database (http://host:port); "
        "with auth on, set MSGTRACE_API_KEY",
    )


def source(url: str | None) -> LocalSource | RemoteSource:
    return RemoteSource(url) if url else LocalSource()


def query_error(q: str, message: str, position: int) -> str:
    """The parser's message with the query underneath and a caret where it went wrong."""
    return f"--q: {message}\n  {q}\n  {' ' * position}^"


def not_found(trace_id: str) -> str:
    hint = "" if _looks_like_trace_id(trace_id) else " (a trace id is 32 hex digits)"
    return f"trace {trace_id[:64]!r} not found{hint}"


def _looks_like_trace_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdefABCDEF" for c in value)


# --- numbers as people read them -------------------------------------------------------------


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def cost(value: float | None) -> str:
    """Dollars with three significant digits below a dollar: LLM calls cost fractions of
    a cent, which ``$0.00`` would hide."""
    if value is None:
        return ""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = min(8, max(2, 2 - math.floor(math.log10(value))))
    text = f"{value:.{decimals}f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{value:.2f}"
    return f"${text}"


def count(value: int) -> str:
    return f"{value:,}"


def moment(value: datetime | None) -> str:
    """Local time, as the rest of the terminal shows it."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


# --- layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Glyphs:
    ellipsis: str
    bar: str
    branch: str
    last: str
    pipe: str
    error: str

    @classmethod
    def for_stream(cls, encoding: str | None) -> Glyphs:
        try:
            "…█├└│✗·".encode(encoding or "utf-8")  # None: a str buffer, which takes anything
        except (UnicodeEncodeError, LookupError):
            return cls("...", "#", "|- ", "`- ", "|  ", "x")
        return cls("…", "█", "├─ ", "└─ ", "│  ", "✗")


def fit(text: str, width: int, glyphs: Glyphs) -> str:
    """``text`` cut to ``width`` characters, the cut marked."""
    if len(text) <= width:
        return text
    keep = max(width - len(glyphs.ellipsis), 0)
    return text[:keep] + glyphs.ellipsis


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers align right
    cap: int = 0  # widest it may grow; 0: as wide as its widest value


def table(
    columns: list[Column],
    rows: list[list[str]],
    glyphs: Glyphs,
    *,
    roles: list[str | None] | None = None,
    paint: Paint = no_paint,
    width: int | None = None,
) -> list[str]:
    """Aligned lines: a header, then one line per row. Capped columns cut long values;
    with ``width`` (a terminal's), capped columns also shrink, widest first, if that is
    enough to fit it."""
    widths = []
    for index, column in enumerate(columns):
        widest = max([len(column.header), *(len(row[index]) for row in rows)])
        widths.append(min(widest, column.cap) if column.cap else widest)
    gap = 2 * (len(columns) - 1)
    narrowest = sum(min(w, 10) if c.cap else w for c, w in zip(columns, widths, strict=True))
    # Shrink only when that makes the lines fit: cutting names on lines that wrap anyway
    # would lose them for nothing.
    if width is not None and narrowest + gap <= width:
        while sum(widths) + gap > width:
            shrinkable = [i for i, c in enumerate(columns) if c.cap and widths[i] > 10]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: widths[i])
            widths[widest] -= 1

    def line(cells: list[str]) -> str:
        parts = []
        for cell, column, size in zip(cells, columns, widths, strict=True):
            cell = fit(cell, size, glyphs)
            parts.append(cell.rjust(size) if column.right else cell.ljust(size))
        return "  ".join(parts).rstrip()

    lines = [paint("head", line([column.header for column in columns]))]
    for index, row in enumerate(rows):
        text = line(row)
        role = roles[index] if roles else None
        lines.append(paint(role, text) if role else text)
    return lines


# --- the three views -------------------------------------------------------------------------


def stats_lines(stats: Stats, where: str) -> list[str]:
    error_share = f"{stats.error_rate:.1%}" if stats.total_traces else "-"
    rows = [
        ("Traces", count(stats.total_traces),
         f"{count(stats.traces_with_errors)} with errors ({error_share})"),
        ("Spans", count(stats.total_spans), ""),
        ("Tokens", count(stats.total_tokens),
         f"{count(stats.input_tokens)} in, {count(stats.output_tokens)} out"),
        ("Cost", cost(stats.cost), ""),
        ("Duration p50", duration(stats.p50_duration_ms), ""),
        ("Duration p95", duration(stats.p95_duration_ms), ""),
    ]  # fmt: skip
    label_width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [f"All traces in {where}", ""]
    for label, value, note in rows:
        text = f"{label.ljust(label_width)}  {value.rjust(value_width)}"
        lines.append(f"{text}  {note}".rstrip())
    return lines


LIST_COLUMNS = [
    Column("TRACE ID"),
    Column("STARTED"),
    Column("WORKFLOW", cap=32),
    Column("SERVICE", cap=24),
    Column("DURATION", right=True),
    Column("SPANS", right=True),
    Column("ERRORS", right=True),
    Column("TOKENS", right=True),
    Column("COST", right=True),
]


def list_lines(
    traces: list[TraceSummary],
    total: int,
    q: str,
    glyphs: Glyphs,
    *,
    paint: Paint = no_paint,
    width: int | None = None,
) -> list[str]:
    matching = f" matching {q!r}" if q else ""
    if not traces:
        return [f"No traces{matching}."]
    rows = [
        [
            trace.trace_id,
            moment(trace.start_time),
            trace.name or "-",
            trace.service_name,
            duration(trace.duration_ms),
            count(trace.span_count),
            count(trace.error_count) if trace.error_count else "-",
            count(trace.total_tokens) if trace.total_tokens else "-",
            cost(trace.cost) if trace.cost else "-",
        ]
        for trace in traces
    ]
    roles = ["error" if trace.error_count else None for trace in traces]
    lines = table(LIST_COLUMNS, rows, glyphs, roles=roles, paint=paint, width=width)
    noun = "trace" if total == 1 else "traces"
    lines += ["", paint("dim", f"{len(traces):,} of {total:,} {noun}{matching}, newest first")]
    return lines


SHOW_COLUMNS = [
    Column("SPAN", cap=60),
    Column("DURATION", right=True),
    Column("TIMELINE"),
    Column("TYPE", cap=10),
    Column("MODEL", cap=28),
    Column("TOKENS", right=True),
    Column("COST", right=True),
    Column("STATUS", cap=100),
]
TIMELINE_WIDTH = 24
MAX_GUIDES = 16  # deeper nesting is drawn at this indentation, its depth written instead


def _bar(start_ns: int, end_ns: int, trace: TraceSummary, glyphs: Glyphs) -> str:
    """Where the span sits in the trace's time, as a bar ``TIMELINE_WIDTH`` wide."""
    total = trace.end_time_unix_nano - trace.start_time_unix_nano
    if total <= 0:
        return glyphs.bar.ljust(TIMELINE_WIDTH)
    scale = TIMELINE_WIDTH / total
    left = min(int((start_ns - trace.start_time_unix_nano) * scale), TIMELINE_WIDTH - 1)
    length = max(1, round((end_ns - start_ns) * scale))
    length = min(length, TIMELINE_WIDTH - max(left, 0))
    return (" " * max(left, 0) + glyphs.bar * length).ljust(TIMELINE_WIDTH)


def _status(span, node: SpanNode) -> str:
    notes = []
    if span.is_error:
        exception = next((e for e in span.events if e.get("name") == "exception"), None)
        kind = (exception or {}).get("attributes", {}).get("exception.type", "")
        message = span.status_message or kind or "ERROR"
        if kind and kind not in message:
            message = f"{kind}: {message}"
        notes.append(message)
    if node.orphan:
        notes.append("parent not received")
    if node.depth_limited:
        notes.append("nested deeper than shown")
    return "; ".join(notes)


def show_lines(
    trace: TraceSummary,
    tree: SpanNode,
    glyphs: Glyphs,
    *,
    paint: Paint = no_paint,
    width: int | None = None,
) -> list[str]:
    errors = f"{trace.error_count:,} error{'s' if trace.error_count != 1 else ''}"
    head = [
        paint("head", f"Trace {trace.trace_id}  {trace.name or '(no root span)'}"),
        f"  service {trace.service_name} · started {moment(trace.start_time)} · "
        f"{duration(trace.duration_ms)} · {trace.span_count:,} spans · "
        + (paint("error", errors) if trace.error_count else errors),
        f"  tokens {trace.total_tokens:,} ({trace.input_tokens:,} in, "
        f"{trace.output_tokens:,} out) · cost {cost(trace.cost)}"
        + (f" · models {', '.join(trace.models)}" if trace.models else ""),
        "",
    ]
    if glyphs.ellipsis == "...":
        head = [line.replace(" · ", " | ") for line in head]
    rows: list[list[str]] = []
    roles: list[str | None] = []
    # The guides of each open ancestor: a pipe while it has children still to come.
    guides: list[str] = []
    for depth, node, is_last in _placed(tree):
        del guides[max(depth - 1, 0) :]
        if depth == 0:
            prefix = ""
        else:
            shown = guides[: MAX_GUIDES - 1]
            marker = f"[{depth}] " if depth > MAX_GUIDES else ""
            prefix = "".join(shown) + marker + (glyphs.last if is_last else glyphs.branch)
        if depth:
            guides.append("   " if is_last else glyphs.pipe)
        span = node.span
        if span is None:
            rows.append(["(root span not received)", "", "", "", "", "", "", ""])
            roles.append("dim")
            continue
        tokens = (
            f"{span.input_tokens:,}/{span.output_tokens:,}"
            if span.input_tokens or span.output_tokens
            else ""
        )
        rows.append(
            [
                prefix + (span.name or "(unnamed)"),
                duration(span.duration_ms),
                _bar(span.start_time_unix_nano, span.end_time_unix_nano, trace, glyphs),
                span.span_type,
                span.model,
                tokens,
                cost(span.cost),
                (glyphs.error + " " if span.is_error else "") + _status(span, node),
            ]
        )
        roles.append("error" if span.is_error else None)
    lines = table(SHOW_COLUMNS, rows, glyphs, roles=roles, paint=paint, width=width)
    return head + lines


def _placed(tree: SpanNode):
    """(depth, node, is_last_child) in drawing order."""
    stack = [(0, tree, True)]
    while stack:
        depth, node, is_last = stack.pop()
        yield depth, node, is_last
        children = node.children
        stack.extend(
            (depth + 1, child, index == len(children) - 1)
            for index, child in reversed(list(enumerate(children)))
        )

"""``msgtrace stats``, ``list`` and ``show``: from the database, and from a server (--url)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from traces import terminal

MS = 1_000_000
MSGTRACE = str(Path(sys.executable).parent / "msgtrace")


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def agent_run(*, service="support-bot", workflow="answer_ticket", minutes_ago=1, error=True):
    """Root 1 s > [LLM 400 ms, tool 100 ms (fails) > retriever 50 ms]; the spans."""
    trace_id = otlp.new_trace_id()
    root, llm, tool, retriever = (otlp.new_span_id() for _ in range(4))
    base = time.time_ns() - minutes_ago * 60_000 * MS
    spans = [
        otlp.span(trace_id, root, "agent.run", base_ns=base, duration_ms=1000,
                  workflow__name=workflow),
        otlp.span(trace_id, llm, "chat gpt-4o", parent=root, base_ns=base, start_ms=10,
                  duration_ms=400, gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o",
                  gen_ai__usage__input_tokens=1200, gen_ai__usage__output_tokens=300,
                  gen_ai__usage__cost=0.0045),
        otlp.span(trace_id, tool, "tool.lookup_order", parent=root, base_ns=base, start_ms=500,
                  duration_ms=100, gen_ai__tool__name="lookup_order",
                  error="order 42 not found" if error else None),
        otlp.span(trace_id, retriever, "retriever.orders", parent=tool, base_ns=base,
                  start_ms=510, duration_ms=50, openinference__span__kind="RETRIEVER"),
    ]  # fmt: skip
    return trace_id, spans


def store(*spans, service="support-bot"):
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))


def stored_run(**options) -> str:
    trace_id, spans = agent_run(**options)
    store(*spans, service=options.get("service", "support-bot"))
    return trace_id


# --- from the database -------------------------------------------------------------------------


@pytest.mark.django_db
def test_stats_prints_the_totals():
    stored_run()
    stored_run(error=False)

    out = run("stats")

    lines = out.splitlines()
    assert lines[0].startswith("All traces in ")
    assert re.search(r"^Traces\s+2  1 with errors \(50\.0%\)$", out, re.M)
    assert re.search(r"^Spans\s+8$", out, re.M)
    assert re.search(r"^Tokens\s+3,000  2,400 in, 600 out$", out, re.M)
    assert re.search(r"^Cost\s+\$0\.009$", out, re.M)
    assert re.search(r"^Duration p50\s+1\.00 s$", out, re.M)
    # The values are right-aligned in one column.
    values = ("2", "8", "3,000", "$0.009", "1.00 s", "1.00 s")
    ends = {line.index(value) + len(value) for line, value in zip(lines[2:], values, strict=True)}
    assert len(ends) == 1, lines


@pytest.mark.django_db
def test_stats_of_an_empty_database():
    out = run("stats")
    assert re.search(r"^Traces\s+0  0 with errors \(-\)$", out, re.M)
    assert re.search(r"^Duration p95\s+-$", out, re.M)


@pytest.mark.django_db
def test_list_is_an_aligned_table_newest_first():
    older = stored_run(minutes_ago=5, workflow="refund")
    newer = stored_run(minutes_ago=1, error=False)

    out = run("list")

    header, first, second, blank, footer = out.splitlines()
    assert header.split() == [
        "TRACE", "ID", "STARTED", "WORKFLOW", "SERVICE", "DURATION", "SPANS", "ERRORS",
        "TOKENS", "COST",
    ]  # fmt: skip
    assert first.startswith(newer) and second.startswith(older)
    figures = ["1.00", "s", "4", "1,500", "$0.0045"]
    assert first.split()[3:] == ["answer_ticket", "support-bot", *figures[:3], "-", *figures[3:]]
    assert second.split()[3:] == ["refund", "support-bot", *figures[:3], "1", *figures[3:]]
    # Left columns start where their header does; numbers end where theirs does.
    assert first.index("answer_ticket") == header.index("WORKFLOW")
    assert first.index("support-bot") == header.index("SERVICE")
    for name, value in (("DURATION", "1.00 s"), ("COST", "$0.0045"), ("TOKENS", "1,500")):
        end = header.index(name) + len(name)
        assert first[end - len(value) : end] == value
    assert blank == ""
    assert footer == "2 of 2 traces, newest first"
    assert "\x1b[" not in out  # no colours when stdout is not a terminal


@pytest.mark.django_db
def test_list_searches_and_limits():
    for _ in range(3):
        stored_run(service="billing")
    stored_run(service="support")

    out = run("list", "--q", "service:billing", "--limit", "2")

    rows = out.splitlines()[1:-2]
    assert len(rows) == 2 and all("billing" in row for row in rows)
    assert out.splitlines()[-1] == "2 of 3 traces matching 'service:billing', newest first"
    assert run("list", "--q", "service:nobody") == "No traces matching 'service:nobody'.\n"


@pytest.mark.django_db
def test_list_cuts_long_names_with_an_ellipsis():
    stored_run(workflow="reconcile_every_invoice_of_the_quarter_against_the_ledger")

    out = run("list")

    row = out.splitlines()[1]
    assert "reconcile_every_invoice_of_the_…" in row  # 32 characters with the mark
    assert "against_the_ledger" not in row


@pytest.mark.django_db
def test_list_with_no_traces_says_so():
    assert run("list") == "No traces.\n"


@pytest.mark.django_db
def test_list_refuses_a_query_that_does_not_parse_and_shows_where():
    with pytest.raises(CommandError) as raised:
        run("list", "--q", "error:true AND duraton:>1s")
    assert str(raised.value) == (
        '--q: unknown field "duraton" — did you mean "duration"?\n'
        "  error:true AND duraton:>1s\n"
        "                 ^"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be from 1 to 10,000, got 0"),
        ("-3", "must be from 1 to 10,000, got -3"),
        ("10001", "must be from 1 to 10,000, got 10001"),
        ("abc", "must be a whole number, got 'abc'"),
    ],
)
def test_list_refuses_a_bad_limit(value, message):
    with pytest.raises(CommandError, match=f"argument --limit: {re.escape(message)}"):
        run("list", "--limit", value)


@pytest.mark.django_db
def test_show_draws_the_span_tree_with_durations_errors_and_tokens():
    trace_id = stored_run()

    out = run("show", trace_id)

    lines = out.splitlines()
    assert lines[0] == f"Trace {trace_id}  answer_ticket"
    assert "service support-bot" in lines[1] and "1.00 s · 4 spans · 1 error" in lines[1]
    assert lines[2].startswith("  tokens 1,500 (1,200 in, 300 out) · cost $0.0045")
    assert lines[2].endswith("models gpt-4o")
    header, *rows = lines[4:]
    assert header.split()[:3] == ["SPAN", "DURATION", "TIMELINE"]
    tree = [row[: header.index("DURATION") + len("DURATION")] for row in rows]
    assert tree == [
        "agent.run                 1.00 s",
        "├─ chat gpt-4o            400 ms",
        "└─ tool.lookup_order      100 ms",
        "   └─ retriever.orders     50 ms",
    ]
    timeline = [row[header.index("TIMELINE") :][:24] for row in rows]
    assert timeline[0] == "█" * 24
    assert timeline[1] == "██████████".ljust(24)  # from 1% of the trace, 40% long
    assert timeline[2] == " " * 12 + "██" + " " * 10
    assert rows[1].split()[-2:] == ["1,200/300", "$0.0045"]
    assert "gpt-4o" in rows[1] and "llm" in rows[1]
    assert rows[2].endswith("✗ ValueError: order 42 not found")
    assert "retriever" in rows[3]


@pytest.mark.django_db
def test_show_marks_orphans_and_a_missing_root():
    trace_id = otlp.new_trace_id()
    step, child = otlp.new_span_id(), otlp.new_span_id()
    store(
        otlp.span(trace_id, step, "step", parent=otlp.new_span_id(), duration_ms=20),
        otlp.span(trace_id, child, "sub-step", parent=step, start_ms=1, duration_ms=5),
    )

    rows = run("show", trace_id).splitlines()[5:]

    assert rows[0].startswith("(root span not received)")
    assert rows[1].startswith("└─ step") and rows[1].endswith("parent not received")
    assert rows[2].startswith("   └─ sub-step")


@pytest.mark.django_db
def test_show_an_unknown_trace_is_an_error():
    with pytest.raises(CommandError, match=f"^trace '{'a' * 32}' not found$"):
        run("show", "a" * 32)
    with pytest.raises(CommandError, match=r"not found \(a trace id is 32 hex digits\)"):
        run("show", "order-42")


@pytest.mark.django_db
def test_errors_are_red_when_colours_are_forced():
    trace_id = stored_run()
    out = run("list", force_color=True)
    assert "\x1b[31;1m" + trace_id in out  # the row of a trace with errors
    assert "\x1b[" in run("show", trace_id, force_color=True)
    assert "\x1b[" not in run("show", trace_id, no_color=True)


def test_table_shrinks_capped_columns_to_a_terminals_width():
    columns = [
        terminal.Column("ID"), terminal.Column("NAME", cap=30), terminal.Column("N", right=True)
    ]  # fmt: skip
    rows = [["a1", "x" * 30, "7"]]
    glyphs = terminal.Glyphs.for_stream("utf-8")

    wide = terminal.table(columns, rows, glyphs)
    narrow = terminal.table(columns, rows, glyphs, width=24)

    assert wide[1] == "a1  " + "x" * 30 + "  7"
    assert narrow[1] == "a1  " + "x" * 16 + "…  7"
    assert all(len(line) <= 24 for line in narrow)
    # Too narrow to fit even with names cut to 10: lines wrap anyway, so nothing is cut.
    assert terminal.table(columns, rows, glyphs, width=16) == wide
    ascii_glyphs = terminal.Glyphs.for_stream("ascii")
    assert terminal.fit("abcdefgh", 6, ascii_glyphs) == "abc..."


def test_numbers_read_as_people_write_them():
    assert [terminal.duration(ms) for ms in (0.25, 12.4, 999, 1234, 61_000, 3_725_000)] == [
        "0.25 ms", "12 ms", "999 ms", "1.23 s", "1m 01s", "1h 02m",
    ]  # fmt: skip
    assert [terminal.cost(c) for c in (None, 0, 0.0001146, 0.0045, 0.05, 0.1, 12.5, 1234.5)] == [
        "", "$0", "$0.000115", "$0.0045", "$0.05", "$0.10", "$12.50", "$1,234.50",
    ]  # fmt: skip


def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "nowhere.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
    env["MSGTRACE_DB_PATH"] = str(missing)

    result = subprocess.run(
        [MSGTRACE, "stats"], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert f"no msgtrace database at {missing}" in result.stderr
    assert "--url" in result.stderr
    assert not missing.exists()


def test_bad_options_on_the_command_line_exit_2_with_usage():
    result = subprocess.run(
        [MSGTRACE, "list", "--limit", "lots"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "usage: msgtrace list" in result.stderr
    assert "argument --limit: must be a whole number, got 'lots'" in result.stderr


# --- from a server (--url) ---------------------------------------------------------------------


def test_commands_read_a_server_with_url(server):
    service = f"terminal-{uuid.uuid4().hex[:8]}"
    trace_id, spans = agent_run(service=service)
    assert server.post(otlp.body(*spans, service=service))[0] == 200

    listed = run("list", "--url", server.url, "--q", f"service:{service}")
    shown = run("show", trace_id, "--url", server.url + "/")
    stats = run("stats", "--url", server.url)

    assert listed.splitlines()[1].startswith(trace_id)
    assert listed.splitlines()[-1] == f"1 of 1 trace matching 'service:{service}', newest first"
    assert shown.splitlines()[0] == f"Trace {trace_id}  answer_ticket"
    assert "   └─ retriever.orders" in shown
    assert "✗" in shown and "order 42 not found" in shown
    assert stats.splitlines()[0] == f"All traces in {server.url}"
    assert re.search(r"^Traces\s+[\d,]+  [\d,]+ with errors", stats, re.M)


def test_a_server_reports_the_same_as_the_database_would(server):
    """--url goes through the client, without --url the ORM: one renderer, one result."""
    service = f"same-{uuid.uuid4().hex[:8]}"
    trace_id, spans = agent_run(service=service)
    assert server.post(otlp.body(*spans, service=service))[0] == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
    if server.database_url:
        env["MSGTRACE_DATABASE_URL"] = server.database_url
    else:
        env["MSGTRACE_DB_PATH"] = str(server.db_path)

    def cli(*args):
        result = subprocess.run(
            [MSGTRACE, *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert cli("show", trace_id) == cli("show", trace_id, "--url", server.url)
    query = ("list", "--q", f"service:{service}")
    assert cli(*query) == cli(*query, "--url", server.url)


def test_url_errors_are_clear(server, free_port):
    with pytest.raises(CommandError, match=r"^cannot reach msgtrace at http://127\.0\.0\.1:\d+"):
        run("stats", "--url", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CommandError, match="^--url: url must look like http://host:port"):
        run("list", "--url", "127.0.0.1:4321")
    with pytest.raises(CommandError, match=f"^trace '{'b' * 32}' not found$"):
        run("show", "b" * 32, "--url", server.url)
    with pytest.raises(CommandError) as raised:
        run("list", "--q", "duration:>>1s", "--url", server.url)
    message = str(raised.value)
    assert message == (
        '--q: ">1s" is not a duration (try 250ms, 1.5s, 2m or 1h)\n  duration:>>1s\n            ^'
    )

"""``msgtrace purge``: every option and every bad one, batches, confirmation, space."""

from __future__ import annotations

import io
import re
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from traces import broadcast, purge
from traces.models import Span, Trace

pytestmark = pytest.mark.django_db
MS = 1_000_000
DAY_MS = 86_400_000
NOW_NS = time.time_ns()


def make_trace(*, days_ago: float = 0, children: int = 1, service="svc", error=False, name="run"):
    """A trace started ``days_ago`` days ago: a root and ``children`` child spans."""
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = NOW_NS - int(days_ago * DAY_MS) * MS - 60_000 * MS
    spans = [otlp.span(trace_id, root, name, base_ns=base, duration_ms=50)]
    for i in range(children):
        spans.append(
            otlp.span(
                trace_id,
                otlp.new_span_id(),
                f"child-{i}",
                parent=root,
                base_ns=base,
                start_ms=1,
                duration_ms=1,
                error="boom" if error and i == 0 else None,
            )
        )
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))
    return trace_id


class Terminal(io.StringIO):
    """A stdin that says it is a terminal, with the answer already typed."""

    def isatty(self) -> bool:
        return True


def purge_command(*args, stdin=None) -> str:
    out = io.StringIO()
    kwargs = {"stdout": out}
    if stdin is not None:
        kwargs["stdin"] = stdin
    call_command("purge", *args, **kwargs)
    return out.getvalue()


def stored() -> set[str]:
    return set(Trace.objects.values_list("pk", flat=True))


# --- bad options ------------------------------------------------------------------------------


def test_without_a_selector_purge_refuses_and_says_to_pass_all():
    make_trace()
    with pytest.raises(CommandError, match="--all for every trace"):
        purge_command("--yes")
    assert Trace.objects.count() == 1


@pytest.mark.parametrize("other", [["--older-than", "7d"], ["--query", "error:true"]])
def test_all_is_refused_with_another_selector(other):
    make_trace()
    with pytest.raises(CommandError, match="do not combine it"):
        purge_command("--all", *other, "--yes")
    assert Trace.objects.count() == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("7", "a whole number and a unit"),
        ("7 days", "a whole number and a unit"),
        ("1.5d", "a whole number and a unit"),
        ("-1d", "a whole number and a unit"),
        ("7y", "a whole number and a unit"),
        ("", "a whole number and a unit"),
        ("0d", "more than 0; to purge every trace pass --all"),
        ("36501d", "at most 36500d"),
    ],
)
def test_a_bad_older_than_is_refused_saying_what_is_wrong(value, message):
    with pytest.raises(CommandError, match=message):
        purge_command(f"--older-than={value}", "--yes")


def test_a_query_that_does_not_parse_is_refused_with_its_position():
    with pytest.raises(CommandError, match=r"--query: .*duration.*at character 11"):
        purge_command("--query", "duration:>abc", "--yes")


def test_an_empty_query_is_refused():
    make_trace()
    with pytest.raises(CommandError, match="--query is empty; to purge every trace pass --all"):
        purge_command("--query", "  ", "--yes")
    assert Trace.objects.count() == 1


def test_an_unknown_option_is_refused():
    with pytest.raises(CommandError, match="unrecognized arguments: --newer-than"):
        purge_command("--newer-than", "7d")


# --- selecting --------------------------------------------------------------------------------


def test_older_than_deletes_older_traces_with_their_spans_and_keeps_the_rest():
    old, older = make_trace(days_ago=8, children=3), make_trace(days_ago=30)
    recent = make_trace(days_ago=6)
    output = purge_command("--older-than", "7d", "--yes")
    assert "2 traces (6 spans) started more than 7d ago." in output
    assert "Deleted 2 traces (6 spans)" in output
    assert stored() == {recent}
    assert not Span.objects.filter(trace_id__in=[old, older]).exists()
    assert Span.objects.filter(trace_id=recent).count() == 2


@pytest.mark.parametrize(("age", "kept"), [("90m", 1), ("12h", 1), ("2d", 2), ("1w", 3)])
def test_older_than_takes_minutes_hours_days_and_weeks(age, kept):
    make_trace(days_ago=0), make_trace(days_ago=1), make_trace(days_ago=3)
    purge_command("--older-than", age, "--yes")
    assert Trace.objects.count() == kept


def test_query_deletes_only_the_matching_traces():
    failed, fine = make_trace(error=True), make_trace()
    output = purge_command("--query", "error:true", "--yes")
    assert "1 traces (2 spans) matching 'error:true'." in output
    assert stored() == {fine}
    assert not Span.objects.filter(trace_id=failed).exists()


def test_older_than_and_query_together_select_traces_matching_both():
    old_batch = make_trace(days_ago=10, service="batch")
    old_web, new_batch = make_trace(days_ago=10, service="web"), make_trace(service="batch")
    output = purge_command("--older-than", "7d", "--query", "service:batch", "--yes")
    assert "started more than 7d ago and matching 'service:batch'" in output
    assert stored() == {old_web, new_batch}
    assert old_batch not in stored()


def test_all_deletes_every_trace_and_span():
    make_trace(), make_trace(days_ago=100, children=4)
    output = purge_command("--all", "--yes")
    assert "2 traces (7 spans) in the database (--all)." in output
    assert Trace.objects.count() == 0 and Span.objects.count() == 0


def test_nothing_selected_says_so_and_asks_nothing():
    keep = make_trace()
    output = purge_command("--older-than", "7d", stdin=io.StringIO(""))
    assert "0 traces (0 spans)" in output and "Nothing to purge." in output
    assert stored() == {keep}


def test_dry_run_counts_traces_and_spans_and_deletes_nothing():
    make_trace(days_ago=9, children=2), make_trace(days_ago=9)
    before = Span.objects.count()
    output = purge_command("--older-than", "7d", "--dry-run")
    assert "2 traces (5 spans) started more than 7d ago." in output
    assert "Dry run: nothing deleted." in output
    assert Trace.objects.count() == 2 and Span.objects.count() == before


# --- confirmation -----------------------------------------------------------------------------


def test_without_yes_a_stdin_that_is_not_a_terminal_is_refused_and_told_to_pass_yes():
    keep = make_trace()
    with pytest.raises(CommandError, match="stdin is not a terminal. Pass --yes"):
        purge_command("--all", stdin=io.StringIO("y\n"))
    assert stored() == {keep}


@pytest.mark.parametrize("answer", ["y\n", "YES\n"])
def test_answering_yes_at_the_prompt_deletes(answer):
    make_trace()
    output = purge_command("--all", stdin=Terminal(answer))
    assert "Delete these 1 traces for good? [y/N]" in output
    assert Trace.objects.count() == 0


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "sure\n"])
def test_any_other_answer_cancels(answer):
    keep = make_trace()
    output = purge_command("--all", stdin=Terminal(answer))
    assert "Cancelled: nothing deleted." in output
    assert stored() == {keep}


# --- batches ----------------------------------------------------------------------------------


def test_traces_go_oldest_first_in_batches_bounded_by_span_count(monkeypatch):
    monkeypatch.setattr(purge, "START_BATCH_SPANS", 4)
    monkeypatch.setattr(purge, "MAX_BATCH_SPANS", 4)
    traces = [make_trace(days_ago=20 - day) for day in range(6)]  # 2 spans each, oldest first
    gone: list[set[str]] = []

    def progress(result):
        gone.append(set(traces) - stored())

    result = purge.traces_purge(traces=Trace.objects.all(), progress=progress)
    assert (result.traces, result.spans, result.batches) == (6, 12, 3)
    assert gone == [set(traces[:2]), set(traces[:4]), set(traces)]
    assert 0 < result.longest_batch < 5


def test_a_trace_bigger_than_a_batch_loses_its_spans_over_several_transactions(monkeypatch):
    monkeypatch.setattr(purge, "START_BATCH_SPANS", 4)
    monkeypatch.setattr(purge, "MAX_BATCH_SPANS", 4)
    big, small = make_trace(days_ago=9, children=10), make_trace(days_ago=8)
    result = purge.traces_purge(traces=Trace.objects.all())
    # 11 spans at 4 a step (3 steps), the big trace's row (1), then the small trace (1).
    assert (result.traces, result.spans, result.batches) == (2, 13, 5)
    assert not Trace.objects.filter(pk__in=[big, small]).exists()
    assert Span.objects.count() == 0


def test_deleted_traces_are_told_to_live_pages(django_capture_on_commit_callbacks):
    gone = make_trace(days_ago=9)
    broadcast._pending.take()
    with django_capture_on_commit_callbacks(execute=True):
        purge_command("--older-than", "7d", "--yes")
    _created, _updated, deleted, _overflow, _stats = broadcast._pending.take()
    assert deleted == {gone}


def test_long_purges_show_progress(monkeypatch):
    monkeypatch.setattr("traces.management.commands.purge.PROGRESS_SECONDS", 0)
    monkeypatch.setattr(purge, "START_BATCH_SPANS", 2)
    monkeypatch.setattr(purge, "MAX_BATCH_SPANS", 2)
    for _ in range(3):
        make_trace(days_ago=9)
    output = purge_command("--older-than", "7d", "--yes")
    assert "1 of 3 traces deleted (33%)" in output
    assert "3 of 3 traces deleted (100%)" in output


# --- space ------------------------------------------------------------------------------------

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite's auto_vacuum; PostgreSQL has autovacuum"
)


def _pragma(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def _vacuum(mode: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA auto_vacuum={mode}")
        cursor.execute("VACUUM")


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_on_sqlite_the_freed_pages_go_back_to_the_file_system():
    assert _pragma("auto_vacuum") == 2  # new databases are created incremental
    for _ in range(20):
        make_trace(days_ago=9, children=20)
    pages_before = _pragma("page_count")
    output = purge_command("--older-than", "7d", "--yes")
    given = re.search(r"Gave [\d.,]+ [KM]B \(([\d,]+) pages\) back to the file system", output)
    assert given and int(given.group(1).replace(",", "")) > 0, output
    assert _pragma("freelist_count") == 0
    assert _pragma("page_count") == pages_before - int(given.group(1).replace(",", ""))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_an_older_database_is_told_to_vacuum_once_and_that_vacuum_turns_it_incremental():
    _vacuum("NONE")  # as a database created before msgtrace set auto_vacuum
    try:
        for _ in range(20):
            make_trace(days_ago=9, children=20)
        output = purge_command("--older-than", "7d", "--yes")
        assert "of free pages stay inside the database file" in output
        assert "run a VACUUM: see docs/operations.md" in output
        assert _pragma("freelist_count") > 0
        _vacuum("INCREMENTAL")  # docs/operations.md's one-off VACUUM
        assert _pragma("auto_vacuum") == 2 and _pragma("freelist_count") == 0
    finally:
        _vacuum("INCREMENTAL")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_on_postgresql_purge_leaves_the_space_to_autovacuum():
    make_trace(days_ago=9)
    output = purge_command("--older-than", "7d", "--yes")
    assert "PostgreSQL's autovacuum makes the freed space reusable." in output

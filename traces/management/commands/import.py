"""``msgtrace import``: spans from files, stored through the collector's own write path."""

from __future__ import annotations

import os
import sys
import time
import zlib
from collections.abc import Iterable, Iterator

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, transaction

from ingest.otlp import PayloadError, decode_json, decode_protobuf, to_params
from ingest.writer import spans_ingest
from traces.export import ImportFormatError, Progress, json_requests, sniff

# Spans per transaction: big enough to write fast, small enough not to hold the database
# (and a running collector waiting on it) for long.
BATCH_SPANS = 5000


class _Refused(Exception):
    """Part of a file that cannot be imported; ``where`` says which part."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


class Command(BaseCommand):
    help = (
        "Import spans from OTLP/JSON lines, OTLP protobuf files or a msgtrace JSON export "
        "(gzipped or not; - for standard input). See docs/export-import.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "files",
            nargs="+",
            metavar="FILE",
            help="OTLP/JSON lines (.jsonl), one OTLP protobuf ExportTraceServiceRequest, or "
            "`msgtrace export --format json` output; '-' reads standard input",
        )

    def handle(self, *args, files: list[str], **options):
        started = time.monotonic()
        if files.count("-") > 1:
            raise CommandError("'-' (standard input) can be given only once")
        if "-" in files and sys.stdin is None:
            raise CommandError("'-': this process has no standard input")
        for name in files:  # every file checked before anything is stored
            if name == "-":
                continue
            if not os.path.exists(name):
                raise CommandError(f"{name}: no such file")
            if os.path.isdir(name):
                raise CommandError(f"{name}: is a directory")
            if not os.access(name, os.R_OK):
                raise CommandError(f"{name}: not readable (permission denied)")
        self.spans = 0
        self.trace_ids: set[str] = set()
        self.new_traces = 0
        self.progress = Progress(sys.stderr, None, "spans") if sys.stderr.isatty() else None
        try:
            for name in files:
                before = self.spans
                self._import_file(name)
                if options["verbosity"] > 1:
                    self.stdout.write(f"{name}: {self.spans - before:,} spans")
        finally:
            if self.progress:
                self.progress.close()
        if options["verbosity"] > 0:
            traces = len(self.trace_ids)
            self.stdout.write(
                f"Imported {self.spans:,} span{'s' if self.spans != 1 else ''} of {traces:,} "
                f"trace{'s' if traces != 1 else ''} ({self.new_traces:,} new) from "
                f"{len(files)} file{'s' if len(files) != 1 else ''} in "
                f"{time.monotonic() - started:.1f} s"
            )

    def _import_file(self, name: str) -> None:
        raw = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        shown = "standard input" if name == "-" else name
        before = self.spans
        try:
            kind, stream = sniff(raw)
            if kind == "protobuf":
                rows = self._protobuf_rows(stream)
            elif kind == "json":
                rows = self._json_rows(json_requests(stream))
            else:
                rows = iter(())
            batch: list[dict] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= BATCH_SPANS:
                    self._write(batch)
                    batch = []
            if batch:
                self._write(batch)
        except (ImportFormatError, _Refused) as exc:
            raise CommandError(f"{shown}: {exc}{self._so_far(before)}") from None
        except (OSError, EOFError, zlib.error) as exc:  # unreadable, or broken gzip
            raise CommandError(f"{shown}: cannot read it: {exc}{self._so_far(before)}") from None
        finally:
            if name != "-":
                raw.close()

    def _so_far(self, before: int) -> str:
        stored = self.spans - before
        if not stored:
            return ". Nothing from it was stored."
        return (
            f". Nothing from the failing batch was stored; the {stored:,} spans before it "
            "were (importing the file again is safe: each span is stored once)."
        )

    def _protobuf_rows(self, stream) -> Iterator[dict]:
        # One message, read whole: at most what the collector takes in one request.
        limit = settings.MSGTRACE_MAX_BODY_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise _Refused(
                "the file",
                f"a protobuf file holds one ExportTraceServiceRequest of at most {limit:,} "
                "bytes (MSGTRACE_MAX_BODY_BYTES), as the collector takes; this one is larger",
            )
        yield from self._decoded("the protobuf message", decode_protobuf, body)

    def _json_rows(self, bodies: Iterable[tuple[str, bytes]]) -> Iterator[dict]:
        for where, body in bodies:
            yield from self._decoded(where, decode_json, body)

    def _decoded(self, where: str, decode, body: bytes) -> list[dict]:
        try:
            decoded = decode(body)
        except PayloadError as exc:
            raise _Refused(where, str(exc)) from None
        if decoded.rejected:
            # The collector would store the rest (a partial success); a file is fixed and
            # imported again instead, so say what is wrong and store none of the batch.
            reasons = "; ".join(decoded.errors)
            raise _Refused(where, f"{decoded.rejected} invalid span(s): {reasons}")
        return decoded.rows

    def _write(self, rows: list[dict]) -> None:
        try:
            params = to_params(rows)
        except orjson.JSONEncodeError as exc:
            raise _Refused(f"a span of trace {rows[0]['trace_id']}", str(exc)) from None
        try:
            with transaction.atomic():
                result = spans_ingest(params)
        except DatabaseError as exc:
            raise _Refused("a batch", f"the database refused it: {exc}") from None
        self.spans += result.spans  # a span twice in one batch is stored once
        self.trace_ids.update(result.trace_ids)
        self.new_traces += len(result.new_trace_ids)
        if self.progress:
            self.progress.update(self.spans)

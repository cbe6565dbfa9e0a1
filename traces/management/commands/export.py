"""``msgtrace export``: traces (and their spans) to a file or standard output, streamed."""

from __future__ import annotations

import gzip
import os
import sys
import time
from datetime import UTC, datetime
from typing import BinaryIO

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Count, Sum

from search.compiler import compile_query
from search.parser import QueryError, parse_moment
from traces.export import FORMATS, Export, Progress
from traces.models import Trace


class Command(BaseCommand):
    help = (
        "Export traces as one JSON document, CSV (a row per trace or per span) or OTLP/JSON "
        "lines, streamed in constant memory. See docs/export-import.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--format",
            default="json",
            choices=list(FORMATS),
            help="json (default): a pretty-printed document that `msgtrace import` reads back; "
            "csv: a row per trace; csv-spans: a row per span; otlp-json: an OTLP/JSON "
            "ExportTraceServiceRequest per line, for any OTLP receiver",
        )
        parser.add_argument(
            "--query", default="", help="only traces matching this search query (as on /traces)"
        )
        parser.add_argument(
            "--since", help="only traces started at or after: 24h, 7d, 2026-01-31, ISO 8601"
        )
        parser.add_argument("--until", help="only traces started before (same forms)")
        parser.add_argument(
            "--output",
            default="-",
            help="file to write, '-' for standard output (the default); a name ending in .gz "
            "is gzipped",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        fmt = FORMATS[options["format"]]
        traces = self._selection(options)
        name = options["output"]
        to_stdout = name == "-"
        output, file = self._open(name)
        progress = None
        # A bar only where it cannot mix with the data: stderr a terminal, stdout not one.
        if sys.stderr.isatty() and not (to_stdout and self.stdout.isatty()):
            totals = traces.aggregate(traces=Count("pk"), spans=Sum("span_count", default=0))
            progress = Progress(sys.stderr, totals[fmt.unit], fmt.unit)

        def on_progress(traces: int, spans: int) -> None:
            progress.update(traces if fmt.unit == "traces" else spans)

        if connection.vendor == "sqlite":
            # One pass over the data gains nothing from the 64 MB page cache that serves the
            # pages; in this process it would only count against memory (bench/export.py).
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA cache_size=-8192")
        export = Export(traces, on_progress=on_progress if progress else None)
        written = 0
        try:
            for chunk in export.chunks(fmt.name):
                output.write(chunk)
                written += len(chunk)
            if file:
                output.close()  # a gzip stream writes its trailer
            else:
                output.flush()
        except BaseException as exc:
            if file:
                file.close()
                os.unlink(name)  # no half-written file left to be taken for a whole one
            if isinstance(exc, BrokenPipeError):
                # `msgtrace export | head`: Python would complain again at exit, flushing.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise CommandError("the output was closed before the export was complete") from None
            raise
        finally:
            if progress:
                progress.close()
        if file:
            file.close()
        if options["verbosity"] > 0:
            # The report goes where the data does not.
            report = sys.stderr if to_stdout else self.stdout
            where = "standard output" if to_stdout else name
            report.write(
                f"Exported {export.traces:,} trace{'s' if export.traces != 1 else ''} "
                f"({export.spans:,} span{'s' if export.spans != 1 else ''}) as {fmt.name} to "
                f"{where}: {written:,} bytes in {time.monotonic() - started:.1f} s\n"
            )

    def _selection(self, options):
        try:
            query = compile_query(options["query"])
        except QueryError as exc:
            raise CommandError(
                f"--query: {exc.message} (at character {exc.position + 1} of "
                f"{options['query'][:80]!r})"
            ) from None
        now = datetime.now(UTC)
        moments = {}
        for option in ("since", "until"):
            value = options[option]
            if value is None:
                moments[option] = None
                continue
            try:
                moments[option] = parse_moment(value, now)
            except QueryError as exc:
                raise CommandError(f"--{option}: {exc.message}") from None
        since, until = moments["since"], moments["until"]
        if since and until and since >= until:
            raise CommandError(f"--since ({since:%Y-%m-%d %H:%M:%S}Z) is not before --until")
        return Trace.objects.filter(query).started_between(since=since, until=until)

    def _open(self, name: str) -> tuple[BinaryIO, BinaryIO | None]:
        """(stream to write, the file we created or None); a clear error if we cannot."""
        if name == "-":
            self.stdout.flush()
            return _StdoutBytes(self.stdout), None
        try:
            file = open(name, "wb")  # noqa: SIM115 (closed by handle, or removed on failure)
        except OSError as exc:
            raise CommandError(f"--output: cannot write {name!r}: {exc.strerror}") from None
        if name.endswith(".gz"):
            return gzip.GzipFile(fileobj=file, mode="wb", mtime=0), file
        return file, file


class _StdoutBytes:
    """The command's stdout for bytes: its binary buffer when it has one (a real stdout);
    else (call_command with a StringIO) the text, decoded."""

    def __init__(self, wrapper) -> None:
        self.text = wrapper._out
        self.binary = getattr(self.text, "buffer", None)

    def write(self, chunk: bytes) -> None:
        if self.binary is not None:
            self.binary.write(chunk)
        else:
            self.text.write(chunk.decode())

    def flush(self) -> None:
        (self.binary or self.text).flush()

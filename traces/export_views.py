"""Downloads: the trace list's matches, or one trace, as a file (``traces.export`` formats).

Exports stream: the response starts at once and memory stays flat however many traces
match. Under ASGI (``msgtrace start``) the body must be an async iterator, or Django
collects a sync one whole before sending it; so each chunk is made in the request's sync
thread (where its database connection lives) and handed to the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from traces.export import FORMATS, Export, export_filename
from traces.models import Trace, is_trace_id
from traces.views import SORTS, list_query

# The trace page offers its spans; the list all four formats.
TRACE_FORMATS = {"json": "json", "csv": "csv-spans"}


@require_GET
def trace_list_export(request: HttpRequest) -> HttpResponse:
    """Every trace that the list's filters, query and sort select (not only one page)."""
    format_name = request.GET.get("format", "")
    errors = []
    if format_name not in FORMATS:
        errors.append(f"format must be one of {', '.join(FORMATS)}; got {format_name[:20]!r}")
    asked = list_query(request.GET)
    errors += asked.errors
    if errors:
        # Never an unfiltered export for a filter that did not apply.
        body = "Nothing was exported:\n" + "\n".join(f"- {error}" for error in errors) + "\n"
        return HttpResponse(body, status=400, content_type="text/plain; charset=utf-8")
    fmt = FORMATS[format_name]
    export = Export(
        asked.queryset,
        order=SORTS[asked.sort.removeprefix("-")],
        descending=asked.sort.startswith("-"),
    )
    return _download(request, export.chunks(fmt.name), fmt.name, fmt.what)


@require_GET
def trace_export(request: HttpRequest, trace_id: str, extension: str) -> HttpResponse:
    """One trace: ``.json`` (our document, which ``msgtrace import`` reads) or ``.csv`` (spans)."""
    trace = Trace.objects.find(trace_id)
    if trace is None or extension not in TRACE_FORMATS:
        context = {
            "trace_id": trace_id[:64],
            "span_id": "",
            "well_formed": is_trace_id(trace_id.lower()),
        }
        return render(request, "traces/not_found.html", context, status=404)
    format_name = TRACE_FORMATS[extension]
    export = Export(Trace.objects.filter(pk=trace.pk))
    # Ingest only stores ids of 32 hex digits; checked again, since it names the file.
    what = f"trace-{trace.trace_id}" if is_trace_id(trace.trace_id) else "trace"
    return _download(request, export.chunks(format_name), format_name, what)


def _download(
    request: HttpRequest, chunks: Generator[bytes, None, None], format_name: str, what: str
) -> StreamingHttpResponse:
    fmt = FORMATS[format_name]
    content = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=fmt.content_type)
    filename = export_filename(what, fmt.extension)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


async def _async_chunks(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """``chunks`` made in the request's sync thread, one at a time; closed if the client goes."""
    step = sync_to_async(next, thread_sensitive=True)
    try:
        while True:
            chunk = await step(chunks, None)
            if chunk is None:
                return
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()

"""What pages tell the browser's script through htmx response headers."""

from __future__ import annotations

from django.http import HttpResponse
from django_htmx.http import trigger_client_event


def toast(response: HttpResponse, message: str, level: str = "info") -> HttpResponse:
    """Show ``message`` as a toast (msgtrace.js listens for ``msgtrace:toast``); plain text."""
    return trigger_client_event(response, "msgtrace:toast", {"message": message, "level": level})

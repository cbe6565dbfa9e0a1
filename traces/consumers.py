"""WebSocket consumers. ``EventsConsumer`` is ``/api/v1/ws``, the JSON stream for programs;
``PageConsumer`` is ``/ws/pages/...``, the pages' live updates as HTML fragments."""

from __future__ import annotations

import asyncio
import json
import re
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http import HttpRequest, QueryDict
from django.http.cookie import parse_cookie
from django.middleware.csrf import get_token
from django.template.loader import render_to_string

from traces import alert_views, broadcast
from traces.models import Trace, is_trace_id
from traces.views import (
    DEFAULT_WINDOW,
    WINDOWS,
    dashboard_context,
    list_query,
    timeline_params_error,
    trace_context,
)

MAX_MESSAGE_CHARS = 4096


class EventsConsumer(AsyncWebsocketConsumer):
    """Every live event as ``{"type", "data"}``; answers ``{"type": "ping"}`` with ``pong``."""

    async def connect(self) -> None:
        broadcast.ensure_started()
        await self.channel_layer.group_add(broadcast.GROUP, self.channel_name)
        await self.accept()
        await self.send_event("connected", {"server": "msgtrace", "events": EVENT_TYPES})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(broadcast.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        # Client text is untrusted: anything unexpected gets an error message, not a crash.
        if text_data is None or len(text_data) > MAX_MESSAGE_CHARS:
            return await self.send_event("error", {"message": "send JSON text under 4 KB"})
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: 4 KB of "[[[[..."
            return await self.send_event("error", {"message": "not JSON"})
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            return await self.send_event("pong", message.get("data"))
        await self.send_event("error", {"message": 'unknown message; send {"type": "ping"}'})

    async def send_event(self, kind: str, data) -> None:
        await self.send(text_data=json.dumps({"type": kind, "data": data}))

    async def events(self, message: dict) -> None:
        """A flush from traces.broadcast: its events, one message each (encoded there)."""
        for text in message["texts"]:
            await self.send(text_data=text)


EVENT_TYPES = ["trace_created", "trace_updated", "trace_deleted", "stats_updated", "resync"]


class PageConsumer(AsyncWebsocketConsumer):
    """The pages' live updates, as HTML fragments the htmx ws extension swaps (hx-swap-oob).

    ``/ws/pages/dashboard``, ``/ws/pages/list`` and ``/ws/pages/trace/<id>``, each with the
    page's own query string, validated as the page's view validates it. When the page's
    URL changes without a reload (a new filter, window or view), the browser sends
    ``{"params": "<query string>"}``; ``"resync": true`` after a reconnect asks for the
    fragments again. Each message holds fragments of one kind, since table rows do not
    parse next to other elements.
    """

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.page = kwargs["page"]
        self.trace_id = kwargs.get("trace_id", "").lower()
        await self.accept()
        if (self.page, bool(self.trace_id)) not in PAGES or (
            self.trace_id and not is_trace_id(self.trace_id)
        ):
            return await self.close(code=4404)  # ≥ 4000: msgtrace.js does not retry
        self.params = _params(self.scope["query_string"].decode("latin-1"))
        self.missed = 0  # new traces the list could not insert, since its last params
        self.toasts: list[dict] = []
        self.toast_task: asyncio.Task | None = None
        self.last_toast = 0.0
        self.csrf_token = _csrf_token(self.scope)
        self.base_url = _base_url(self.scope)
        broadcast.ensure_started()
        await self.channel_layer.group_add(broadcast.GROUP, self.channel_name)
        await self.channel_layer.group_add(broadcast.ALERTS_GROUP, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "toast_task", None):
            self.toast_task.cancel()
        await self.channel_layer.group_discard(broadcast.GROUP, self.channel_name)
        await self.channel_layer.group_discard(broadcast.ALERTS_GROUP, self.channel_name)

    async def alerts_changed(self, message: dict) -> None:
        """Alert events (traces.broadcast.alerts_changed): a toast and the nav badge on
        every page, and the alerts pages' rules and history."""
        await self._send_all(alert_views.toast_fragments(message["alerts"]))
        if self.page == "alerts":
            await self._send_all(await self._fragments(set(), set(), resync=True))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        # Untrusted: anything but {"params": str, "resync": bool} is ignored.
        if text_data is None or len(text_data) > MAX_MESSAGE_CHARS:
            return
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):  # 4 KB of "[[[[" is too deep for json
            return
        if not isinstance(message, dict) or not isinstance(message.get("params", ""), str):
            return
        self.params = _params(message.get("params", ""))
        self.missed = 0
        if message.get("resync") is True:
            await self._send_all(await self._fragments(set(), set(), resync=True))

    async def events(self, message: dict) -> None:
        """A flush from traces.broadcast: the fragments this page shows, then a toast."""
        created: dict[str, dict] = {}
        updated: set[str] = set()
        resync = stats = False
        for event in message["events"]:
            kind, data = event["type"], event["data"]
            if kind == "trace_created":
                created[data["trace_id"]] = data
            elif kind == "trace_updated":
                updated.add(data["trace_id"])
            elif kind == "resync":
                resync = True
            elif kind == "stats_updated":
                stats = True
        wanted = (
            (self.page == "list" and (created or updated or resync))
            or (self.page == "dashboard" and (stats or resync))
            or (self.page == "trace" and (self.trace_id in updated or resync))
        )
        if wanted:
            await self._send_all(await self._fragments(set(created), updated, resync=resync))
        if created:
            self.toasts += created.values()
            if self.toast_task is None or self.toast_task.done():
                self.toast_task = asyncio.create_task(self._send_toast())

    async def _send_all(self, fragments: list[str]) -> None:
        for html in fragments:
            await self.send(text_data=html)

    async def _send_toast(self) -> None:
        # At most one toast a second: whatever arrives meanwhile becomes "N new traces".
        await asyncio.sleep(max(0.0, self.last_toast + TOAST_SECONDS - time.monotonic()))
        summaries, self.toasts = self.toasts, []
        self.last_toast = time.monotonic()
        traces = [
            {**s, "duration_ns": None if s["duration_ms"] is None else s["duration_ms"] * 1e6}
            for s in summaries
        ]
        errors = sum(1 for trace in traces if trace["error_count"])
        html = render_to_string("traces/_live_toast.html", {"traces": traces, "errors": errors})
        await self.send(text_data=html.strip())

    @database_sync_to_async
    def _fragments(self, created: set[str], updated: set[str], *, resync: bool) -> list[str]:
        if self.page == "alerts":
            return alert_views.page_fragments(self.params, csrf_token=self.csrf_token)
        if self.page == "dashboard":
            return self._dashboard()
        if self.page == "list":
            return self._list(created, updated, resync=resync)
        return self._trace()

    def _dashboard(self) -> list[str]:
        window = self.params.get("window", DEFAULT_WINDOW)
        if window not in WINDOWS:
            return []  # the page showed an error, not figures
        context = dashboard_context(window, base_url=self.base_url)
        stats = render_to_string("traces/dashboard.html#stats", context)
        return [f'<div id="dash" hx-swap-oob="innerHTML">{stats}</div>']

    def _list(self, created: set[str], updated: set[str], *, resync: bool) -> list[str]:
        asked = list_query(self.params)
        if asked.queryset is None:
            return []  # the page shows why its filters could not apply: no live rows
        if resync or not asked.newest_first_page_one:
            if resync:
                self.missed = max(self.missed, 1)
            elif created:
                self.missed += asked.queryset.filter(pk__in=created).count()
            else:
                return []
            notice = render_to_string("traces/_live_notice.html", {"missed": self.missed, "oob": 1})
            return [notice.strip()]
        traces = list(asked.queryset.filter(pk__in=created | updated))  # newest first
        new = [trace for trace in traces if trace.pk in created]
        changed = [trace for trace in traces if trace.pk not in created]
        fragments = []
        if new:
            rows = "".join(_row(trace, fresh=True) for trace in new)
            fragments.append(f'<tbody hx-swap-oob="afterbegin:#trace-rows">{rows}</tbody>')
        if changed:
            fragments.append("".join(_row(trace, oob=True) for trace in changed))
        return fragments

    def _trace(self) -> list[str]:
        trace = Trace.objects.filter(pk=self.trace_id).first()
        if trace is None:
            return []
        # The page's view and span filter, if valid; always the first window of rows.
        params = self.params.copy()
        for name in ("offset", "dir"):
            params.pop(name, None)
        if timeline_params_error(params):
            params = QueryDict()
        context = {**trace_context(params, trace), "csrf_token": self.csrf_token, "oob": 1}
        head = render_to_string("traces/detail.html#head", context).strip()
        timeline = render_to_string("traces/detail.html#timeline", context)
        return [head, f'<div id="timeline-body" hx-swap-oob="innerHTML">{timeline}</div>']


PAGES = {("dashboard", False), ("list", False), ("trace", True), ("alerts", False)}
TOAST_SECONDS = 1.0
MAX_PARAMS_CHARS = 2000


def _params(query: str) -> QueryDict:
    # Too long to be one of our pages' URLs: treated as invalid, so no live rows.
    return QueryDict(query if len(query) <= MAX_PARAMS_CHARS else "page=invalid")


def _row(trace, **flags) -> str:
    return render_to_string("traces/_trace_row.html", {"trace": trace, **flags}).strip()


def _headers(scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _base_url(scope) -> str:
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return f"{scheme}://{_headers(scope).get('host', 'localhost')}"


def _csrf_token(scope) -> str:
    """A token for forms in re-rendered fragments, from the page's own CSRF cookie."""
    secret = parse_cookie(_headers(scope).get("cookie", "")).get(settings.CSRF_COOKIE_NAME, "")
    if not re.fullmatch(r"[a-zA-Z0-9]{32}", secret):
        return ""  # no form token; htmx still sends the X-CSRFToken header
    request = HttpRequest()
    request.META["CSRF_COOKIE"] = secret
    return get_token(request)

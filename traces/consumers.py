"""WebSocket consumers. ``EventsConsumer`` is ``/api/v1/ws``, the JSON stream for programs."""

from __future__ import annotations

import json

from channels.generic.websocket import AsyncWebsocketConsumer

from traces import broadcast

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
        except ValueError:
            return await self.send_event("error", {"message": "not JSON"})
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            return await self.send_event("pong", message.get("data"))
        await self.send_event("error", {"message": 'unknown message; send {"type": "ping"}'})

    async def send_event(self, kind: str, data) -> None:
        await self.send(text_data=json.dumps({"type": kind, "data": data}))

    async def events(self, message: dict) -> None:
        """A flush from traces.broadcast: its events, one message each."""
        for event in message["events"]:
            await self.send(text_data=json.dumps(event))


EVENT_TYPES = ["trace_created", "trace_updated", "trace_deleted", "stats_updated", "resync"]

"""ASGI entry point: HTTP (Django) and WebSocket (Channels) on one port."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "msgtrace_site.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from ingest.views import CollectorApp  # noqa: E402
from traces.auth import WebSocketAuthGuard  # noqa: E402
from traces.consumers import EventsConsumer, PageConsumer  # noqa: E402


class BrowserOriginValidator(OriginValidator):
    """Programs send no Origin and are let in; a browser must come from an allowed host.

    That keeps another site's page, open in the same browser, from reading the stream.
    """

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or self.validate_origin(parsed_origin)


websockets = URLRouter(
    [
        path("api/v1/ws", EventsConsumer.as_asgi()),
        # The pages' live updates: dashboard, list, or trace/<id>, with the page's query.
        path("ws/pages/<str:page>", PageConsumer.as_asgi()),
        path("ws/pages/<str:page>/<str:trace_id>", PageConsumer.as_asgi()),
    ]
)

# The OTLP collector first (plain ASGI, see ingest/views.py); then Django, whose first
# middleware after SecurityMiddleware, WhiteNoise, answers for static files.
application = ProtocolTypeRouter(
    {
        "http": CollectorApp(django_asgi_app),
        # Origin first; then, with MSGTRACE_AUTH on, a signed-in session (the page's
        # cookie) or, on /api/v1/ws, an API key (traces/auth.py).
        "websocket": BrowserOriginValidator(
            AuthMiddlewareStack(WebSocketAuthGuard(websockets)), settings.ALLOWED_HOSTS
        ),
    }
)

"""ASGI entry point: HTTP (Django) and, as live updates arrive, WebSocket on one port."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "msgtrace_site.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from ingest.views import CollectorApp  # noqa: E402

# The OTLP collector first (plain ASGI, see ingest/views.py); then our CSS/JS and the
# admin's, straight from the source tree (no collectstatic step); then Django.
application = ProtocolTypeRouter({"http": CollectorApp(ASGIStaticFilesHandler(django_asgi_app))})

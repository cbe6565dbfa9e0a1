"""``msgtrace create_api_key NAME``: a new API key, printed once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from traces.keys import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for exporters and API clients (needed when MSGTRACE_AUTH is on). "
        "The key is printed once; msgtrace stores only its hash."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="what will use the key, e.g. checkout-agent")

    def handle(self, *args, **options):
        try:
            api_key, key = api_key_create(name=options["name"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        # The how-to on stderr and the key alone on stdout, so that
        # `KEY=$(msgtrace create_api_key ci)` captures just the key.
        self.stderr.write(
            f"API key {api_key.name!r} created (mt_{api_key.prefix}_…). Copy it now: it is "
            "not shown again. Send it as `Authorization: Bearer <key>`; for OpenTelemetry "
            "exporters: OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>",
            style_func=str,
        )
        self.stdout.write(key)

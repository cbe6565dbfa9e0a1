"""``msgtrace list_api_keys``: every API key, with its status and when it was last used."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from traces.models import ApiKey


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


class Command(BaseCommand):
    help = "List API keys: prefix, name, status, created and last used (UTC, to the minute)."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="include revoked keys")

    def handle(self, *args, **options):
        keys = ApiKey.objects.all() if options["all"] else ApiKey.objects.active()
        rows = [
            (
                f"mt_{key.prefix}_…",
                key.name,
                "active" if key.is_active else f"revoked {_when(key.revoked_at)}",
                _when(key.created_at),
                _when(key.last_used_at),
            )
            for key in keys
        ]
        if not rows:
            self.stdout.write("No API keys. Create one with: msgtrace create_api_key NAME")
            return
        header = ("KEY", "NAME", "STATUS", "CREATED", "LAST USED")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )

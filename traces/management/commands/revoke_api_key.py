"""``msgtrace revoke_api_key KEY``: stop a key working (by name, prefix or the key itself)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from traces.keys import KEY_PATTERN, api_keys_revoke
from traces.models import ApiKey


class Command(BaseCommand):
    help = (
        "Revoke an API key, named by its prefix (as msgtrace list_api_keys shows it), the "
        "whole key, or its name. Servers refuse it within 10 seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("key", help="mt_1a2b3c4d, 1a2b3c4d, the whole key, or the key's name")

    def handle(self, *args, **options):
        given = options["key"].strip()
        whole = KEY_PATTERN.fullmatch(given)
        prefix = whole[1] if whole else given.removeprefix("mt_").rstrip("_…")
        keys = ApiKey.objects.active().filter(prefix=prefix)
        if not keys:
            keys = ApiKey.objects.active().filter(name=given)
        if len(keys) > 1:
            raise CommandError(
                f"{len(keys)} active keys are named {given!r}: give the prefix of the one to "
                "revoke (msgtrace list_api_keys)"
            )
        if not keys:
            raise CommandError(f"no active API key matches {given!r} (msgtrace list_api_keys)")
        api_keys_revoke(keys=keys)
        self.stdout.write(f"Revoked API key {keys[0].name!r} (mt_{keys[0].prefix}_…).")

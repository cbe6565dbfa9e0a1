"""``msgtrace evaluate_alerts``: check every alert rule once and send what it owes (cron)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand

from traces import broadcast
from traces.alerting import alerts_run, default_holder, lease_holder

# A run renews the lease as it goes; this only has to outlast the longest step (a webhook
# retried with its backoff).
LEASE_SECONDS = 300


class Command(BaseCommand):
    help = (
        "Check every enabled alert rule once and send the notifications its transitions owe. "
        "Safe next to a server that evaluates too: only one evaluator works at a time."
    )

    def handle(self, *args, **options):
        now = datetime.now(UTC)
        holder = default_holder("cron")
        result = alerts_run(
            now=now,
            holder=holder,
            lease_seconds=LEASE_SECONDS,
            release=True,
            publish=broadcast.alerts_changed,
        )
        if not result.held:
            lease = lease_holder(now)
            who = f" ({lease.holder}, until {lease.expires_at:%H:%M:%S} UTC)" if lease else ""
            self.stdout.write(f"Another evaluator is checking the rules{who}: nothing to do.")
            return
        kinds = [event.kind for event in result.events]
        notified = len(result.delivered)
        line = (
            f"{result.rules} rule{'s' if result.rules != 1 else ''} checked: "
            f"{kinds.count('firing')} firing, {kinds.count('resolved')} resolved, "
            f"{kinds.count('broken')} broken; "
            f"{notified} event{'s' if notified != 1 else ''} notified."
        )
        failed = [event for event in result.delivered if event.delivery != "sent"]
        if failed:
            line += f" {len(failed)} of them failed to reach a target (see /alerts)."
        self.stdout.write(line)
        if result.failed:
            self.stderr.write(f"{result.failed} rule(s) could not be checked (see the log).")

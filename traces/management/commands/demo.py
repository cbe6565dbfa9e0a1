"""``msgtrace demo``: stream realistic agent traces into a running msgtrace, to watch."""

from __future__ import annotations

import random
import re

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from traces.demo import DemoError, DemoGenerator, Sender, Tally, stream

MAX_RATE = 1000.0  # runs a second; beyond it the demo measures the client, not msgtrace
_RATE = re.compile(r"(\d+(?:\.\d+)?)/(s|m)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h)")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(text: str) -> float:
    """``5/s`` or ``30/m`` as runs per second."""
    match = _RATE.fullmatch(text.strip())
    if not match:
        raise CommandError(f"--rate must look like 5/s or 30/m, got {text!r}")
    rate = float(match[1]) / _SECONDS[match[2]]
    if not 0 < rate <= MAX_RATE:
        raise CommandError(f"--rate must be above 0 and at most {MAX_RATE:g}/s, got {text!r}")
    return rate


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``1h`` in seconds; ``0`` for until interrupted."""
    text = text.strip()
    if text == "0":
        return 0.0
    match = _DURATION.fullmatch(text)
    if not match:
        raise CommandError(
            f"--duration must look like 60s, 10m or 1h (or 0: until Ctrl-C), got {text!r}"
        )
    return float(match[1]) * _SECONDS[match[2]]


def default_url() -> str:
    """Where ``msgtrace start`` listens with the same MSGTRACE_HOST and MSGTRACE_PORT."""
    host = settings.HOST
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 (bound to all: reach it on loopback)
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.PORT}"


class Command(BaseCommand):
    help = (
        "Stream realistic agent traces (several services and workflows, models, tools, "
        "retries, ~5% errors, a few very large runs) into a running msgtrace, so the "
        "dashboard and live pages fill up. Ctrl-C stops it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", help=f"the msgtrace to send to (default {default_url()}, from "
            "MSGTRACE_HOST and MSGTRACE_PORT)",
        )  # fmt: skip
        parser.add_argument(
            "--rate", default="5/s", help="runs per second or minute: 5/s, 30/m (default 5/s)"
        )
        parser.add_argument(
            "--duration", default="0",
            help="how long: 60s, 10m, 1h; 0 (the default) runs until Ctrl-C",
        )  # fmt: skip
        parser.add_argument(
            "--seed", type=int, help="the same runs every time (trace ids are always new)"
        )

    def handle(self, *args, **options):
        rate = parse_rate(options["rate"])
        duration = parse_duration(options["duration"])
        url = (options["url"] or default_url()).rstrip("/")
        try:
            sender = Sender(url)
        except ValueError as exc:
            raise CommandError(f"--url {exc}") from None
        try:
            sender.check()
        except DemoError as exc:
            raise CommandError(f"{exc} (is `msgtrace start` running there?)") from None
        how_long = f"for {options['duration']}" if duration else "until Ctrl-C"
        self.stdout.write(
            f"Sending demo traces to {url} at {options['rate']} {how_long}.\n"
            f"Watch them arrive: {url}/ (dashboard) and {url}/traces"
        )
        generator = DemoGenerator(random.Random(options["seed"]))

        def report(tally: Tally) -> None:
            self.stdout.write(f"  {_clock(tally.seconds)}  {_summary(tally)}")

        try:
            stream(sender, generator, rate=rate, duration=duration, report=report)
        except DemoError as exc:
            raise CommandError(f"{exc} after {_summary(sender.tally)}") from None
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
        finally:
            sender.close()
        self.stdout.write(f"Sent {_summary(sender.tally)} in {sender.tally.seconds:.1f} s.")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def _summary(tally: Tally) -> str:
    text = f"{tally.traces:,} traces, {tally.spans:,} spans ({tally.failed_traces:,} with errors"
    if tally.large_traces:
        text += f", {tally.large_traces:,} very large"
    if tally.rejected_spans:
        text += f"; the server rejected {tally.rejected_spans:,} spans"
    return text + ")"

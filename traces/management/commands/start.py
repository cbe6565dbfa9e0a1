"""``msgtrace start``: apply pending migrations, then serve HTTP and WebSocket on one port."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from traces.auth import serving_check


class Command(BaseCommand):
    help = "Apply pending migrations and serve msgtrace (HTTP + WebSocket, one port, daphne)."

    def add_arguments(self, parser):
        # manage.main exports these to MSGTRACE_* before settings load; they are declared
        # here so that --help lists them and argparse accepts them.
        parser.add_argument("--host", help=f"address to bind (default {settings.HOST})")
        parser.add_argument("--port", help=f"port to listen on (default {settings.PORT})")
        parser.add_argument("--db-path", help="SQLite database file (default ./msgtrace.db)")
        parser.add_argument(
            "--no-migrate", action="store_true", help="do not apply pending migrations"
        )

    def handle(self, *args, **options):
        if options["db_path"] and connection.vendor != "sqlite":
            raise CommandError("--db-path is for SQLite; MSGTRACE_DATABASE_URL is set")
        if not options["no_migrate"]:
            self._migrate()
        # Bound beyond loopback, auth is on: refuse to serve a door nobody has a key to.
        refusal, warnings = serving_check()
        connection.close()
        if refusal:
            raise CommandError(refusal)
        for warning in warnings:
            self.stderr.write(warning)
        # Imported here: daphne.server installs Twisted's asyncio reactor on import.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from msgtrace_site.asgi import application

        host, port = settings.HOST, settings.PORT
        database = connection.settings_dict
        where = (
            f"SQLite {database['NAME']}"
            if connection.vendor == "sqlite"
            else f"PostgreSQL {database['HOST'] or 'localhost'}/{database['NAME']}"
        )
        shown_host = f"[{host}]" if ":" in host else host

        def ready():
            from ingest.workers import warm_up
            from traces.alerting import alerts_start
            from traces.purge import retention_start
            from traces.rollups import Builder

            warm_up()
            Builder().start()  # analytics rollups, ahead of the pages that read them
            self.stdout.write(
                f"msgtrace listening on http://{shown_host}:{port}  ({where})\n"
                f"  OTLP/HTTP endpoint: http://{shown_host}:{port}/v1/traces"
            )
            if settings.MSGTRACE_AUTH:
                self.stdout.write("  auth: pages need a login, ingest and the API an API key")
            days = settings.MSGTRACE_RETENTION_DAYS
            if days:
                self.stdout.write(f"  retention: traces older than {days} days go, now and daily")
            if settings.MSGTRACE_ALERT_INTERVAL:
                self.stdout.write(
                    f"  alerts: rules checked every {settings.MSGTRACE_ALERT_INTERVAL} s"
                )
            self.stdout.flush()
            # Once listening, in a thread of its own: the first purge may take a while.
            retention_start(days)
            # Alert rules, in a thread of their own too: no evaluation waits on ingest or
            # holds it up (traces/alerting.py).
            alerts_start(settings.MSGTRACE_ALERT_INTERVAL)

        logging.getLogger("daphne").setLevel(logging.WARNING)
        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            ready_callable=ready,
            verbosity=0,
        )
        server.run()
        if not server.listening_addresses:
            raise CommandError(f"could not listen on {host}:{port} (is the port in use?)")

    def _migrate(self):
        with _migration_lock():
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
            if pending:
                self.stdout.write(f"Applying {len(pending)} database migration(s)...")
                call_command("migrate", interactive=False, verbosity=0)
        # The server's own threads open their connections; this one is done.
        connection.close()


# pg_advisory_lock's key for migrations: "msgtrace" as a 64-bit number.
_MIGRATION_LOCK = int.from_bytes(b"msgtrace", "big")


@contextmanager
def _migration_lock():
    """One process at a time past this point, on PostgreSQL.

    Several processes sharing a database often start together (a scaled compose service, a
    rolling upgrade); without the lock, each would apply the same migrations at once and
    all but one would fail. The others wait here, then find nothing left to apply.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])

"""A real msgtrace server in a subprocess (``msgtrace start``), on the run's database."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

PG_ADMIN_URL = os.environ.get(
    "MSGTRACE_TEST_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            PG_ADMIN_URL.replace("postgres://", "postgresql://"), connect_timeout=2
        ):
            return True
    except Exception:
        return False


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(sql)


def on_postgres() -> bool:
    return bool(os.environ.get("MSGTRACE_DATABASE_URL"))


class MsgtraceServer:
    def __init__(self, process, port, directory, env, database_url, db_path):
        self.process = process
        self.port = port
        self.directory = directory
        self.env = env
        self.database_url = database_url
        self.db_path = db_path
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, directory: Path, port: int, **extra_env: str) -> MsgtraceServer:
        server = cls.prepare(directory, port, **extra_env)
        server.launch()
        return server

    @classmethod
    def prepare(cls, directory: Path, port: int, **extra_env: str) -> MsgtraceServer:
        """The server with its database chosen (and on PostgreSQL made), not yet launched:
        ``manage`` can create users and API keys before ``launch``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
        env.update({k: str(v) for k, v in extra_env.items()})
        database_url = db_path = None
        if on_postgres():
            name = f"msgtrace_live_{uuid.uuid4().hex[:10]}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
            env["MSGTRACE_DATABASE_URL"] = database_url
        else:
            db_path = directory / "msgtrace.db"
            env["MSGTRACE_DB_PATH"] = str(db_path)
        return cls(None, port, directory, env, database_url, db_path)

    def manage(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """``msgtrace <args>`` on this server's database and settings."""
        script = Path(sys.executable).parent / "msgtrace"
        return subprocess.run(
            [str(script), *args],
            cwd=self.directory,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def sibling(self, port: int) -> MsgtraceServer:
        """A second process on the same database (its stop() leaves the database alone)."""
        server = MsgtraceServer(None, port, self.directory, dict(self.env), None, self.db_path)
        server.launch()
        return server

    def launch(self) -> None:
        script = Path(sys.executable).parent / "msgtrace"
        log = open(self.directory / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(script), "start", "--port", str(self.port)],
            cwd=self.directory,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"msgtrace start exited {self.process.returncode}:\n{self.log()}"
                )
            try:
                status, _, _ = self.request("GET", "/health", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"msgtrace start did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return (self.directory / f"server-{self.port}.log").read_text(errors="replace")

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def post(
        self, body: bytes, content_type="application/x-protobuf", path="/v1/traces", **headers
    ):
        return self.request("POST", path, body, {"Content-Type": content_type, **headers})

    def get_json(self, path: str, expect: int = 200):
        status, _, body = self.request("GET", path)
        assert status == expect, (status, body[:500])
        return json.loads(body)

    def wait_for_trace(self, trace_id: str, spans: int, timeout: float = 15.0) -> dict:
        """Exporters answer before our assertions run; wait until the trace is complete."""
        deadline = time.monotonic() + timeout
        while True:
            status, _, body = self.request("GET", f"/api/v1/traces/{trace_id}")
            if status == 200 and json.loads(body)["span_count"] >= spans:
                return json.loads(body)
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id} did not reach {spans} spans: {body[:300]}")
            time.sleep(0.05)

    def count_spans_in_database(self, trace_ids: list[str]) -> int:
        """Read the store directly, not through the server (for the kill -9 test)."""
        marks = ",".join(["%s"] * len(trace_ids))
        sql = f"SELECT COUNT(*) FROM traces_span WHERE trace_id IN ({marks})"
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url.replace("postgres://", "postgresql://")) as conn:
                return conn.execute(sql, trace_ids).fetchone()[0]
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql.replace("%s", "?"), trace_ids).fetchone()[0]

    def child_pids(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.database_url:
            name = self.database_url.rsplit("/", 1)[1]
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

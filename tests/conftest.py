"""Shared fixtures, and the rule that one ``pytest`` tests both databases.

The suite runs on SQLite (the default). When it finishes, if PostgreSQL answers on
127.0.0.1:5432 (CI always has one), the same command re-runs itself with
``MSGTRACE_DATABASE_URL`` pointing there, and its result counts: a failure on either
database fails the run. ``MSGTRACE_TEST_POSTGRES=off`` skips the second run;
``MSGTRACE_TEST_POSTGRES=on`` makes an unreachable PostgreSQL an error instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from tests.server import PG_ADMIN_URL, postgres_reachable

_PG_RERUN_ENV = "MSGTRACE_TEST_PG_RUN"


def pytest_report_header(config):
    url = os.environ.get("MSGTRACE_DATABASE_URL")
    return f"msgtrace test database: {'PostgreSQL ' + url if url else 'SQLite'}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    wanted = os.environ.get("MSGTRACE_TEST_POSTGRES", "auto").lower()
    if os.environ.get(_PG_RERUN_ENV) or os.environ.get("MSGTRACE_DATABASE_URL"):
        return  # this already is the PostgreSQL run
    if wanted in {"off", "0", "no", "false"} or session.config.option.collectonly:
        return
    if exitstatus not in (0, 5):  # SQLite failed: that decides the run
        return
    if not postgres_reachable():
        message = "PostgreSQL is not reachable on 127.0.0.1:5432"
        if wanted in {"on", "1", "yes", "true"}:
            session.config.get_terminal_writer().line(f"\n{message}: failing", red=True)
            session.exitstatus = 1
        else:
            session.config.get_terminal_writer().line(f"\n{message}: SQLite only", yellow=True)
        return
    writer = session.config.get_terminal_writer()
    writer.sep("=", "re-running the suite against PostgreSQL", bold=True)
    database = f"msgtrace_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        _PG_RERUN_ENV: "1",
        "MSGTRACE_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database,
    }
    params = session.config.invocation_params
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *params.args],
        cwd=params.dir,
        env=env,
        check=False,
    )
    if result.returncode not in (0, 5):
        session.exitstatus = result.returncode


@pytest.fixture(scope="session")
def free_port():
    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    return pick


@pytest.fixture(scope="session")
def live_server_process(tmp_path_factory, free_port):
    """One real ``msgtrace start`` (daphne) for the session, on the run's database."""
    from tests.server import MsgtraceServer

    server = MsgtraceServer.start(tmp_path_factory.mktemp("server"), free_port())
    yield server
    server.stop()


@pytest.fixture
def server(live_server_process):
    return live_server_process


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory, free_port):
    """A real ``msgtrace start`` with MSGTRACE_AUTH on, a superuser (tests/authserver.py)
    and ``auth_server.api_key``."""
    from tests.authserver import start_auth_server

    server = start_auth_server(tmp_path_factory.mktemp("auth-server"), free_port())
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_price_table():
    """Each test reads the price table as its own transaction left it.

    The writer keeps the table in memory; a test's rolled-back ModelPrice rows would
    otherwise linger there (in production a changed row is re-read within seconds).
    """
    from traces.pricing import forget_prices

    forget_prices()

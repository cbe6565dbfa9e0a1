"""The command line and site-wide settings."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

MSGTRACE = str(Path(sys.executable).parent / "msgtrace")


def test_msgtrace_runs_management_commands(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MSGTRACE_DB_PATH": str(tmp_path / "cli.db")}
    result = subprocess.run(
        [MSGTRACE, "migrate", "-v", "0"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.db").exists()
    result = subprocess.run([MSGTRACE, "help", "start"], env=env, capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--host", "--port", "--db-path"):
        assert option in result.stdout


def test_start_options_choose_the_sqlite_file_and_port(tmp_path, free_port):
    # --db-path and --port must reach settings before Django loads them.
    target, port = tmp_path / "chosen.db", free_port()
    process = subprocess.Popen(
        [MSGTRACE, "start", "--db-path", str(target), "--port", str(port)],
        env={"PATH": "/usr/bin:/bin", "MSGTRACE_DB_PATH": str(tmp_path / "not-this.db")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = process.stdout.readline() + process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner, banner
        assert str(target) in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
        assert target.exists() and not (tmp_path / "not-this.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.django_db
def test_home_page_shows_this_servers_endpoint(client):
    response = client.get("/", HTTP_HOST="localhost:4321")
    assert response.status_code == 200
    assert b"http://localhost:4321/v1/traces" in response.content


def test_db_path_with_a_database_url_is_refused(tmp_path):
    result = subprocess.run(
        [MSGTRACE, "start", "--db-path", str(tmp_path / "x.db")],
        env={"PATH": "/usr/bin:/bin", "MSGTRACE_DATABASE_URL": "postgres://nobody@127.0.0.1:1/x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "--db-path is for SQLite" in result.stderr

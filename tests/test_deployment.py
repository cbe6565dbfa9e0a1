"""Deployment settings: security headers, HTTPS behind a proxy, cookies, static files, checks.

In-process tests read the headers Django sends with the suite's settings (loopback, plain
HTTP). The production ones start real servers with the environment a deployment behind a
TLS proxy uses (docs/deployment.md), and run ``check --deploy`` as CI does.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from tests.server import PG_ADMIN_URL, MsgtraceServer, _pg_admin, on_postgres

MSGTRACE = str(Path(sys.executable).parent / "msgtrace")
DOMAIN = "traces.example.com"
# What docs/deployment.md and docker-compose.yml set, and .ci/run checks.
PRODUCTION = {
    "MSGTRACE_SECURE_PROXY": "on",
    "MSGTRACE_SECRET_KEY": "k" * 20 + "-a-long-random-secret-for-the-tests-only-" + "x" * 20,
    "MSGTRACE_ALLOWED_HOSTS": f"{DOMAIN},127.0.0.1",
}


def run_msgtrace(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "MSGTRACE_DB_PATH": str(tmp_path / "check.db")}
    if os.environ.get("MSGTRACE_DATABASE_URL"):
        base["MSGTRACE_DATABASE_URL"] = os.environ["MSGTRACE_DATABASE_URL"]
    return subprocess.run(
        [MSGTRACE, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


# --- headers, in-process ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/traces", "/analytics", "/alerts", "/admin/login/"])
def test_pages_carry_a_strict_content_security_policy(client, path):
    response = client.get(path, follow=True)
    assert response.status_code == 200
    policy = directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["style-src"] == ["'self'"]
    # Scripts from our origin only; a nonce if a template asked for one, never inline.
    assert policy["script-src"][0] == "'self'"
    assert all(re.fullmatch(r"'nonce-[A-Za-z0-9+/=]+'", v) for v in policy["script-src"][1:])
    assert "unsafe" not in response.headers["Content-Security-Policy"]


@pytest.mark.django_db
def test_pages_have_no_inline_script_or_style_for_the_policy_to_block(client):
    for path in ("/", "/traces", "/analytics", "/alerts", "/login"):
        html = client.get(path).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\sstyle=|\son[a-z]+=", html), path
        assert "<style" not in html, path


@pytest.mark.django_db
def test_pages_and_api_send_nosniff_referrer_policy_and_no_framing(client):
    for path in ("/", "/api/v1/traces", "/health"):
        response = client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "same-origin", path
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin", path
    assert client.get("/").headers["X-Frame-Options"] == "DENY"
    assert client.get("/api/v1/traces").headers["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_hsts_is_sent_over_https_only(client):
    assert "Strict-Transport-Security" not in client.get("/").headers
    secure = client.get("/", secure=True)
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"


@pytest.mark.django_db
def test_static_files_come_from_the_source_tree_without_a_build(client):
    # The suite runs without `collectstatic`: plain names, served by WhiteNoise.
    html = client.get("/").content.decode()
    assert 'href="/static/msgtrace/msgtrace.css"' in html
    response = client.get("/static/msgtrace/msgtrace.css")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/css")
    assert (
        b"".join(response.streaming_content)
        == (Path(__file__).parents[1] / "static/msgtrace/msgtrace.css").read_bytes()
    )
    assert client.get("/static/admin/css/base.css").status_code == 200
    assert client.get("/static/msgtrace/nothing.css").status_code == 404


# --- settings and checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MSGTRACE_SECURE_PROXY", "maybe"),
        ("MSGTRACE_HSTS_SECONDS", "a year"),
        ("MSGTRACE_HSTS_SECONDS", "-1"),
        ("MSGTRACE_HSTS_SECONDS", "999999999"),
    ],
)
def test_a_bad_hardening_setting_stops_the_server_naming_the_variable(tmp_path, variable, value):
    result = run_msgtrace("check", tmp_path=tmp_path, **{variable: value})
    assert result.returncode == 2
    assert f"msgtrace: configuration error: {variable}" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_deploy_passes_with_the_production_settings(tmp_path):
    result = run_msgtrace(
        "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **PRODUCTION
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_without_https_or_with_debug(tmp_path):
    plain = {k: v for k, v in PRODUCTION.items() if k != "MSGTRACE_SECURE_PROXY"}
    result = run_msgtrace(
        "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **plain
    )
    assert result.returncode != 0
    for check in ("security.W008", "security.W012", "security.W016"):
        assert check in result.stderr
    debug = {**PRODUCTION, "MSGTRACE_DEBUG": "on"}
    result = run_msgtrace(
        "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **debug
    )
    assert "security.W018" in result.stderr


# --- a production server behind a TLS proxy -----------------------------------------------------


@pytest.fixture(scope="module")
def production(tmp_path_factory, free_port):
    """A real server with the production settings, and a superuser to sign in with."""
    directory = tmp_path_factory.mktemp("production")
    server = MsgtraceServer.start(directory, free_port(), **PRODUCTION)
    result = subprocess.run(
        [
            MSGTRACE,
            "createsuperuser",
            "--noinput",
            "--username",
            "root",
            "--email",
            "root@example.com",
        ],
        env={**server.env, "DJANGO_SUPERUSER_PASSWORD": "a long enough password"},
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    yield server
    server.stop()


def via_proxy(server, method, path, body=None, headers=None):
    """A request as the TLS proxy forwards it: the public host name, X-Forwarded-Proto."""
    headers = {"Host": DOMAIN, "X-Forwarded-Proto": "https", **(headers or {})}
    return server.request(method, path, body, headers)


def cookies(headers: dict) -> SimpleCookie:
    jar = SimpleCookie()
    for name, value in headers:
        if name.lower() == "set-cookie":
            jar.load(value)
    return jar


def raw_request(server, method, path, body=None, headers=None):
    """Like server.request, but every Set-Cookie header (a dict keeps only the last)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def test_plain_http_page_requests_are_redirected_to_https_without_hsts(production):
    status, headers, _ = production.request("GET", "/traces?q=x", headers={"Host": DOMAIN})
    assert status == 301
    assert headers["Location"] == f"https://{DOMAIN}/traces?q=x"
    assert "Strict-Transport-Security" not in headers
    # Health checks call plain HTTP from inside the network.
    status, _, _ = production.request("GET", "/health", headers={"Host": "127.0.0.1"})
    assert status == 200


def test_https_through_the_proxy_gets_hsts_and_secure_httponly_cookies(production):
    status, headers, body = via_proxy(production, "GET", "/login")
    assert status == 200, body[:300]
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, raw_headers, body = raw_request(
        production,
        "GET",
        "/login",
        headers={"Host": DOMAIN, "X-Forwarded-Proto": "https"},
    )
    csrf = cookies(raw_headers)["csrftoken"]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Lax"

    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username=root&password=a+long+enough+password"
    status, raw_headers, body = raw_request(
        production,
        "POST",
        "/login?next=/admin/",
        body=form,
        headers={
            "Host": DOMAIN,
            "X-Forwarded-Proto": "https",
            "Origin": f"https://{DOMAIN}",
            "Referer": f"https://{DOMAIN}/login",
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf.value}",
        },
    )
    assert status == 302, body[:500]
    session = cookies(raw_headers)["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


def test_a_forged_https_claim_from_another_host_is_refused(production):
    # X-Forwarded-Proto is believed, the Host header still is not: unknown names get 400.
    status, _, _ = production.request(
        "GET", "/", headers={"Host": "evil.example", "X-Forwarded-Proto": "https"}
    )
    assert status == 400


# --- static files after `collectstatic` -------------------------------------------------------


@pytest.mark.slow
def test_after_collectstatic_pages_link_hashed_gzipped_files_cached_for_a_year(tmp_path, free_port):
    static_root = tmp_path / "static-build"
    result = run_msgtrace(
        "collectstatic", "--noinput", tmp_path=tmp_path, MSGTRACE_STATIC_ROOT=str(static_root)
    )
    assert result.returncode == 0, result.stderr
    assert (static_root / "staticfiles.json").is_file()

    server = MsgtraceServer.start(tmp_path, free_port(), MSGTRACE_STATIC_ROOT=str(static_root))
    try:
        _, _, html = server.request("GET", "/")
        links = re.findall(rb'(?:href|src)="(/static/[^"]+)"', html)
        assert links and all(re.search(rb"\.[0-9a-f]{12}\.(css|js|svg)$", link) for link in links)
        css = next(link for link in links if link.endswith(b".css")).decode()
        status, headers, body = server.request("GET", css, headers={"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert "immutable" in headers["Cache-Control"]
        assert "max-age=315360000" in headers["Cache-Control"]
        # The admin's files went through the same build.
        manifest = json.loads((static_root / "staticfiles.json").read_text())["paths"]
        admin_css = "/static/" + manifest["admin/css/base.css"]
        assert re.search(r"base\.[0-9a-f]{12}\.css$", admin_css)
        assert server.request("GET", admin_css)[0] == 200
    finally:
        server.stop()


# --- several processes on one PostgreSQL ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not on_postgres(), reason="several processes share PostgreSQL, not SQLite")
def test_processes_starting_together_on_a_new_database_migrate_it_once(tmp_path, free_port):
    # As `docker compose up --scale msgtrace=3` does: all start at once, on empty tables.
    name = f"msgtrace_together_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
    env["MSGTRACE_DATABASE_URL"] = url
    servers = [MsgtraceServer(None, free_port(), tmp_path, dict(env), None, None) for _ in range(3)]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(MsgtraceServer.launch, servers))  # each waits until healthy
        for server in servers:
            assert server.get_json("/api/v1/stats")["total_traces"] == 0
        logs = [server.log() for server in servers]
        assert sum("Applying" in log for log in logs) == 1, logs
    finally:
        for server in servers:
            server.stop()
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

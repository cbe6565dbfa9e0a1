"""A real ``msgtrace start`` with MSGTRACE_AUTH on: a user and an API key made first, as an
operator would (``createsuperuser``, ``create_api_key``), and a way to sign in over HTTP."""

from __future__ import annotations

import http.client
import re
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from tests.server import MsgtraceServer

USERNAME = "ada"
PASSWORD = "correct horse battery staple"


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def start_auth_server(directory: Path, port: int, **env: str) -> MsgtraceServer:
    """``server.api_key`` is a working key; ``USERNAME``/``PASSWORD`` a superuser."""
    server = MsgtraceServer.prepare(directory, port, MSGTRACE_AUTH="on", **env)
    _ok(server.manage("migrate", "-v", "0"))
    _ok(
        server.manage(
            "createsuperuser", "--noinput", "--username", USERNAME, "--email", "ada@example.com",
            DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        )
    )  # fmt: skip
    server.api_key = _ok(server.manage("create_api_key", "tests")).strip()
    server.launch()
    return server


def sign_in(server: MsgtraceServer, username: str = USERNAME, password: str = PASSWORD) -> str:
    """Sign in through the login form; the ``Cookie`` header of the signed-in session."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/login")
        response = conn.getresponse()
        page = response.read().decode()
        cookies = SimpleCookie()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                cookies.load(value)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        body = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
        conn.request(
            "POST",
            "/login",
            body,
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={cookies['csrftoken'].value}",
                "Referer": f"{server.url}/login",
            },
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 302, response.status
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                cookies.load(value)
        return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
    finally:
        conn.close()

"""Authentication (MSGTRACE_AUTH): logins for pages, API keys for programs, refusals for
everyone else, the login rate limit, WebSockets, and ``msgtrace start`` refusing to serve
an open door. In-process where the Django test client suffices; a real server where the
ASGI stack (collector, sockets) is what is tested."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern
from google.rpc import status_pb2
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests import otlp
from tests.authserver import PASSWORD, USERNAME, sign_in
from tests.server import MsgtraceServer
from traces.auth import login_limiter
from traces.keys import api_key_create, api_keys_revoke, keyring

MSGTRACE = str(Path(sys.executable).parent / "msgtrace")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def auth_on(settings):
    settings.MSGTRACE_AUTH = True
    # Logins in these tests check passwords dozens of times: a fast hasher keeps them quick.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    login_limiter.reset()
    keyring.reset()
    yield settings
    login_limiter.reset()
    keyring.reset()


@pytest.fixture
def user(auth_on, django_user_model):
    return django_user_model.objects.create_user(USERNAME, password=PASSWORD)


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


# --- every URL, anonymously --------------------------------------------------------------


def _sample(pattern) -> str:
    """A path that ``pattern`` matches: converters and named groups get plausible values."""
    text = str(pattern)
    values = {"trace_id": TRACE_ID, "span_id": "b7ad6b7169203331", "extension": "json"}

    def route(match):
        converter, name = match[1] or "str", match[2]
        return "1" if converter in ("int", "path") else values.get(name, "1")

    def group(match):
        body = match[2]
        if re.fullmatch(r"[\w|]+", body):
            return body.split("|")[0]  # an alternation of names: the first
        return "nothing-here"

    if isinstance(pattern, RegexPattern):
        return re.sub(r"\(\?P<(\w+)>([^)]*)\)", group, text).lstrip("^").rstrip("$")
    return re.sub(r"<(?:(\w+):)?(\w+)>", route, text)


def _every_url() -> list[tuple[str, URLPattern]]:
    found = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + _sample(entry.pattern))
            else:
                found.append(("/" + prefix + _sample(entry.pattern), entry))

    walk(get_resolver().url_patterns, "")
    return found


# Open without signing in: the login page, logout (which only signs out), the health
# check, and the admin's login URL, which only redirects to our login page.
PUBLIC = {"/login", "/logout", "/health", "/admin/login/"}


def _refused(response) -> bool:
    if response.status_code == 302:
        return response["Location"].startswith("/login?")
    return response.status_code in (401, 403)


@pytest.mark.django_db
def test_anonymous_crawl_of_every_url_with_auth_on_is_refused_except_login_and_health(
    client, auth_on
):
    urls = _every_url()
    assert len(urls) > 50  # the admin's too
    leaks = []
    for path, pattern in urls:
        # The sample path really is this pattern's, so the crawl reaches every view (the
        # admin's own login is the one pattern shadowed, by ours).
        assert resolve(path).func == pattern.callback or path == "/admin/login/", path
        if path in PUBLIC:
            continue
        for method, extra in (
            ("get", {}),
            ("post", {}),
            ("get", {"HTTP_HX_REQUEST": "true"}),
            ("delete", {}),
        ):
            response = getattr(client, method)(path, **extra)
            if not _refused(response):
                leaks.append((method, path, response.status_code))
    assert leaks == []
    # A path no view serves is refused too, not told apart from a real one.
    assert _refused(client.get("/no-such-page"))


@pytest.mark.django_db
def test_login_health_and_logout_answer_anonymously_with_auth_on(client, auth_on):
    assert client.get("/login").status_code == 200
    assert client.get("/health").json()["status"] == "ok"
    response = client.post("/logout")
    assert (response.status_code, response["Location"]) == (302, "/login")
    assert client.get("/logout").status_code == 405  # logging out is a POST


@pytest.mark.django_db
def test_with_auth_off_pages_and_api_answer_without_login_as_before(client):
    assert client.get("/").status_code == 200
    assert client.get("/traces", HTTP_HX_REQUEST="true").status_code == 200
    assert client.get("/api/v1/stats").status_code == 200
    assert b"Log out" not in client.get("/").content


# --- pages -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_page_sends_you_to_login_and_back_to_it_after_signing_in(client, user):
    response = client.get("/traces?q=error:true")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=/traces%3Fq%3Derror%3Atrue"
    login = client.get(response["Location"])
    assert b'name="next" value="/traces?q=error:true"' in login.content
    # Signed out, the header offers nothing that would only lead back here.
    assert b'class="nav"' not in login.content

    response = client.post(
        "/login", {"username": USERNAME, "password": PASSWORD, "next": "/traces?q=error:true"}
    )
    assert (response.status_code, response["Location"]) == (302, "/traces?q=error:true")
    page = client.get("/traces?q=error:true")
    assert page.status_code == 200
    assert USERNAME.encode() in page.content
    assert b'action="/logout"' in page.content and b"Log out" in page.content


@pytest.mark.django_db
def test_a_wrong_password_shows_the_form_again_with_an_error(client, user):
    response = client.post("/login", {"username": USERNAME, "password": "wrong"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_an_htmx_request_signed_out_gets_401_and_hx_redirect_to_login_for_its_page(client, auth_on):
    response = client.get(
        "/traces?offset=50",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/traces?q=model:gpt-4o",
    )
    assert response.status_code == 401
    assert response["HX-Redirect"] == "/login?next=/traces%3Fq%3Dmodel%3Agpt-4o"
    assert b"<html" not in response.content


@pytest.mark.django_db
def test_logout_is_a_post_that_ends_the_session(signed_in):
    assert signed_in.get("/").status_code == 200
    response = signed_in.post("/logout")
    assert (response.status_code, response["Location"]) == (302, "/login")
    assert signed_in.get("/").status_code == 302


@pytest.mark.django_db
def test_signed_in_every_post_without_a_csrf_token_is_refused(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    accepted = []
    for path, _ in _every_url():
        response = client.post(path)
        if response.status_code != 403 and path not in ("/health", "/admin/login/"):
            accepted.append((path, response.status_code))
    assert accepted == []


@pytest.mark.django_db
def test_the_admin_signs_in_through_the_rate_limited_login_page(client, auth_on, settings):
    settings.MSGTRACE_AUTH = False  # even on loopback, the admin has no login of its own
    response = client.get("/admin/")
    assert response["Location"] == "/admin/login/?next=/admin/"
    response = client.get(response["Location"])
    assert (response.status_code, response["Location"]) == (302, "/login?next=/admin/")


@pytest.mark.django_db
def test_a_signed_in_user_who_is_not_staff_is_told_why_the_admin_sends_them_to_login(
    signed_in,
):
    response = signed_in.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == "/login?next=/admin/"
    assert b"who cannot use the admin: sign in with a staff account" in response.content


# --- login rate limit ------------------------------------------------------------------------


@pytest.mark.django_db
def test_repeated_failed_logins_from_one_address_get_429_with_retry_after(client, user, auth_on):
    auth_on.MSGTRACE_LOGIN_RATE_LIMIT = 3
    for name in ("ada", "bob", "carol"):  # a guesser trying several accounts
        assert client.post("/login", {"username": name, "password": "guess"}).status_code == 200
    response = client.post("/login", {"username": "dave", "password": "guess"})
    assert response.status_code == 429
    assert 290 <= int(response["Retry-After"]) <= 300
    assert b"Too many failed sign-ins. Try again in 5 minutes." in response.content
    # Locked means locked: even the right password is not checked.
    response = client.post("/login", {"username": USERNAME, "password": PASSWORD})
    assert response.status_code == 429
    assert client.get("/").status_code == 302
    # Another address is not affected.
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert other.post("/login", {"username": USERNAME, "password": PASSWORD}).status_code == 302


@pytest.mark.django_db
def test_repeated_failed_logins_for_one_user_get_429_from_any_address(user, auth_on):
    auth_on.MSGTRACE_LOGIN_RATE_LIMIT = 3
    for number in range(3):
        guesser = Client(REMOTE_ADDR=f"10.0.1.{number}")
        assert guesser.post("/login", {"username": "ADA", "password": "x"}).status_code == 200
    response = Client(REMOTE_ADDR="10.0.2.1").post(
        "/login", {"username": USERNAME, "password": PASSWORD}
    )
    assert response.status_code == 429 and int(response["Retry-After"]) > 0


@pytest.mark.django_db
def test_behind_the_tls_proxy_the_address_the_proxy_saw_is_counted(user, auth_on):
    auth_on.MSGTRACE_LOGIN_RATE_LIMIT = 2
    auth_on.MSGTRACE_SECURE_PROXY = True
    proxy = Client(REMOTE_ADDR="10.9.9.9")
    for name in ("bob", "carol"):
        # The client's own claim (the first entry) changes nothing: the proxy's is last.
        forwarded = f"1.2.3.{len(name)}, 203.0.113.7"
        response = proxy.post(
            "/login", {"username": name, "password": "x"}, HTTP_X_FORWARDED_FOR=forwarded
        )
        assert response.status_code == 200
    response = proxy.post(
        "/login", {"username": "dave", "password": "x"}, HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    assert response.status_code == 429
    # Another client behind the same proxy still signs in.
    response = proxy.post(
        "/login", {"username": USERNAME, "password": PASSWORD}, HTTP_X_FORWARDED_FOR="198.51.100.2"
    )
    assert response.status_code == 302


@pytest.mark.django_db
def test_a_successful_login_clears_that_users_failures(client, user, auth_on):
    auth_on.MSGTRACE_LOGIN_RATE_LIMIT = 3
    for _ in range(2):
        client.post("/login", {"username": USERNAME, "password": "typo"})
    assert client.post("/login", {"username": USERNAME, "password": PASSWORD}).status_code == 302
    client.post("/logout")
    for number in range(2):
        Client(REMOTE_ADDR=f"10.0.3.{number}").post(
            "/login", {"username": USERNAME, "password": "typo"}
        )
    other = Client(REMOTE_ADDR="10.0.4.1")
    assert other.post("/login", {"username": USERNAME, "password": PASSWORD}).status_code == 302


# --- the JSON API ------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_takes_a_key_as_bearer_or_x_api_key_and_answers_401_json_otherwise(client, auth_on):
    _, key = api_key_create(name="reader")
    assert client.get("/api/v1/stats", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert client.get("/api/v1/traces", HTTP_X_API_KEY=key).status_code == 200

    response = client.get("/api/v1/stats")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="msgtrace"'
    assert "API key" in response.json()["error"]

    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    for headers in (
        {"HTTP_AUTHORIZATION": f"Bearer {wrong}"},
        {"HTTP_X_API_KEY": "mt_nothing"},
        {"HTTP_AUTHORIZATION": f"Basic {key}"},
    ):
        response = client.get("/api/v1/stats", **headers)
        assert response.status_code == 401, headers
    response = client.get("/api/v1/stats", HTTP_AUTHORIZATION=f"Bearer {wrong}")
    assert response.json() == {"error": "invalid or revoked API key"}
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.django_db
def test_a_revoked_key_is_refused_at_once_by_this_process(client, auth_on):
    api_key, key = api_key_create(name="short-lived")
    assert client.get("/api/v1/stats", HTTP_X_API_KEY=key).status_code == 200
    api_keys_revoke(keys=[api_key])
    assert client.get("/api/v1/stats", HTTP_X_API_KEY=key).status_code == 401


@pytest.mark.django_db
def test_an_api_request_with_a_known_key_reads_no_key_from_the_database(client, auth_on):
    _, key = api_key_create(name="hot")
    client.get("/api/v1/stats", HTTP_X_API_KEY=key)  # loads the key set
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/stats", HTTP_X_API_KEY=key).status_code == 200
    assert not [q for q in queries.captured_queries if "traces_apikey" in q["sql"]]


@pytest.mark.django_db
def test_a_signed_in_browser_uses_the_api_but_must_send_the_csrf_token_to_delete(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/v1/stats").status_code == 200
    response = client.delete(f"/api/v1/traces/{TRACE_ID}")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    client.get("/")  # the page sets the CSRF cookie its htmx requests send back
    token = client.cookies["csrftoken"].value
    response = client.delete(f"/api/v1/traces/{TRACE_ID}", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 404  # past the check: there is no such trace


@pytest.mark.django_db
def test_a_key_needs_no_csrf_token_even_to_delete(auth_on):
    _, key = api_key_create(name="cleanup")
    client = Client(enforce_csrf_checks=True)
    response = client.delete(f"/api/v1/traces/{TRACE_ID}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 404


def test_client_and_terminal_commands_send_msgtrace_api_key(auth_server):
    from traces.client import AuthenticationError, Client

    assert Client(auth_server.url, api_key=auth_server.api_key).stats().total_spans >= 0
    with pytest.raises(AuthenticationError) as refused:
        Client(auth_server.url, api_key="").stats()
    assert refused.value.status == 401 and "MSGTRACE_API_KEY" in refused.value.message

    env = {"PATH": "/usr/bin:/bin", "MSGTRACE_DB_PATH": "/nonexistent/unused.db"}
    command = [MSGTRACE, "stats", "--url", auth_server.url]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "MSGTRACE_API_KEY" in result.stderr
    env["MSGTRACE_API_KEY"] = auth_server.api_key
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "traces" in result.stdout.lower()


def test_msgtrace_demo_sends_with_msgtrace_api_key_and_says_why_without(auth_server):
    command = [MSGTRACE, "demo", "--url", auth_server.url, "--rate", "5/s", "--duration", "1s"]
    env = {"PATH": "/usr/bin:/bin", "MSGTRACE_DB_PATH": "/nonexistent/unused.db"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr and "set MSGTRACE_API_KEY" in result.stderr
    env["MSGTRACE_API_KEY"] = auth_server.api_key
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- the real server: collector and WebSockets ------------------------------------------------


def test_real_server_refuses_anonymous_ingest_api_and_pages_but_not_health(auth_server):
    body = otlp.body(otlp.span(otlp.new_trace_id(), otlp.new_span_id(), "root"))
    for path in ("/v1/traces", "/api/v1/traces/export"):
        status, headers, data = auth_server.post(body, path=path)
        assert status == 401, path
        assert headers["WWW-Authenticate"] == 'Bearer realm="msgtrace"'
        # An exporter sending protobuf gets its error as a google.rpc.Status, like any other.
        assert headers["Content-Type"] == "application/x-protobuf"
        assert status_pb2.Status.FromString(data).code == 16  # UNAUTHENTICATED
        status, headers, data = auth_server.post(b"{}", "application/json", path=path)
        assert status == 401 and json.loads(data)["code"] == 16
        status, _, _ = auth_server.post(
            body, path=path, Authorization=f"Bearer {auth_server.api_key}"
        )
        assert status == 200
    assert auth_server.request("GET", "/health")[0] == 200
    assert auth_server.request("GET", "/api/v1/traces")[0] == 401
    status, headers, _ = auth_server.request("GET", "/traces")
    assert (status, headers["Location"]) == (302, "/login?next=/traces")


def _ws_url(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


@pytest.mark.parametrize(
    "path", ["/api/v1/ws", "/ws/pages/dashboard", f"/ws/pages/trace/{TRACE_ID}"]
)
def test_a_websocket_without_a_session_or_key_is_refused_at_the_handshake(auth_server, path):
    with pytest.raises(InvalidStatus) as refused, connect(_ws_url(auth_server, path)):
        pass
    assert refused.value.response.status_code == 403


def test_a_signed_in_session_opens_the_pages_socket_and_a_key_the_events_socket(auth_server):
    cookie = sign_in(auth_server)
    with connect(_ws_url(auth_server, "/api/v1/ws"), additional_headers={"Cookie": cookie}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
    key_header = {"Authorization": f"Bearer {auth_server.api_key}"}
    with connect(_ws_url(auth_server, "/api/v1/ws"), additional_headers=key_header) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
    # The page's socket sends nothing until something happens: open is the answer.
    with connect(
        _ws_url(auth_server, "/ws/pages/dashboard"), additional_headers={"Cookie": cookie}
    ) as ws:
        ws.send(json.dumps({"params": "", "resync": True}))
        assert 'id="dash"' in ws.recv(timeout=10)
    # A key is for programs: the pages' sockets want a signed-in person.
    with (
        pytest.raises(InvalidStatus),
        connect(_ws_url(auth_server, "/ws/pages/dashboard"), additional_headers=key_header),
    ):
        pass


def test_a_signed_in_session_reaches_pages_and_api_on_the_real_server(auth_server):
    cookie = sign_in(auth_server)
    status, _, body = auth_server.request("GET", "/", headers={"Cookie": cookie})
    assert status == 200 and b"Log out" in body
    assert auth_server.request("GET", "/api/v1/stats", headers={"Cookie": cookie})[0] == 200


def test_a_websocket_from_another_site_is_refused_even_signed_in(auth_server):
    cookie = sign_in(auth_server)
    headers = {"Cookie": cookie}
    with (
        pytest.raises(InvalidStatus),
        connect(
            _ws_url(auth_server, "/ws/pages/dashboard"),
            additional_headers=headers,
            origin="https://evil.example",
        ),
    ):
        pass


# --- settings and msgtrace start ------------------------------------------------------------


def _setting(env: dict[str, str], name: str) -> subprocess.CompletedProcess:
    code = f"from django.conf import settings; print(settings.{name})"
    return subprocess.run(
        [MSGTRACE, "shell", "--no-imports", "-c", code],
        env={"PATH": "/usr/bin:/bin", "MSGTRACE_DB_PATH": "/tmp/unused.db", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "False"),
        ({"MSGTRACE_HOST": "0.0.0.0"}, "True"),
        ({"MSGTRACE_HOST": "192.168.1.20"}, "True"),
        ({"MSGTRACE_HOST": "::1"}, "False"),
        ({"MSGTRACE_HOST": "0.0.0.0", "MSGTRACE_AUTH": "off"}, "False"),
        ({"MSGTRACE_AUTH": "on"}, "True"),
    ],
)
def test_auth_is_on_beyond_loopback_unless_turned_off(env, expected):
    result = _setting(env, "MSGTRACE_AUTH")
    assert result.stdout.strip() == expected, result.stderr


def test_a_malformed_msgtrace_auth_stops_start_up_naming_it():
    result = _setting({"MSGTRACE_AUTH": "sometimes"}, "MSGTRACE_AUTH")
    assert result.returncode == 2
    assert "MSGTRACE_AUTH must be one of on/off" in result.stderr


def test_start_on_all_interfaces_without_a_user_or_key_refuses_and_says_how(tmp_path, free_port):
    server = MsgtraceServer.prepare(tmp_path, free_port())
    try:
        result = server.manage("start", "--host", "0.0.0.0", "--port", str(server.port))
        assert result.returncode == 1
        assert "bound to 0.0.0.0" in result.stderr
        assert "msgtrace createsuperuser" in result.stderr
        assert "msgtrace create_api_key NAME" in result.stderr
        assert "MSGTRACE_AUTH=off" in result.stderr
        assert "listening" not in result.stdout
    finally:
        server.stop()


def test_start_on_all_interfaces_with_auth_off_serves_with_a_loud_warning(tmp_path, free_port):
    server = MsgtraceServer.start(
        tmp_path, free_port(), MSGTRACE_HOST="0.0.0.0", MSGTRACE_AUTH="off"
    )
    try:
        assert server.request("GET", "/api/v1/stats")[0] == 200
        log = server.log()
        assert "WARNING: MSGTRACE_AUTH=off while bound to 0.0.0.0" in log
        assert "can read, send and delete every trace" in log
    finally:
        server.stop()


def test_start_with_only_a_key_serves_and_warns_that_nobody_can_sign_in(tmp_path, free_port):
    server = MsgtraceServer.prepare(tmp_path, free_port(), MSGTRACE_AUTH="on")
    try:
        assert server.manage("migrate", "-v", "0").returncode == 0
        key = server.manage("create_api_key", "ci").stdout.strip()
        server.launch()
        assert "no user yet" in server.log()
        assert "auth: pages need a login" in server.log()
        status, _, _ = server.request("GET", "/api/v1/stats", headers={"x-api-key": key})
        assert status == 200
    finally:
        server.stop()


@pytest.mark.django_db
def test_quoted_next_survives_the_login_redirect(client, user):
    path = "/traces?q=" + quote('name:"a b"')
    response = client.get(path)
    login = response["Location"]
    response = client.post(login, {"username": USERNAME, "password": PASSWORD, "next": path})
    assert response["Location"] == path

"""API keys: made once and stored hashed, checked in memory, revocable, last use recorded,
rate-limited per key; and the real OpenTelemetry exporter sending with and without one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from tests import otlp
from tests.authserver import start_auth_server
from traces import keys
from traces.keys import KEY_PATTERN, api_key_create, api_keys_revoke, keyring
from traces.models import ApiKey


@pytest.fixture(autouse=True)
def _fresh_keyring():
    keyring.reset()
    yield
    keyring.reset()


# --- making, listing, revoking ----------------------------------------------------------


@pytest.mark.django_db
def test_create_api_key_prints_the_key_once_and_stores_only_its_hash():
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "checkout-agent", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert KEY_PATTERN.fullmatch(key)
    assert "not shown again" in err.getvalue() and key not in err.getvalue()
    stored = ApiKey.objects.get()
    assert stored.name == "checkout-agent"
    assert key.startswith(f"mt_{stored.prefix}_")
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.rsplit("_", 1)[1]
    row = ApiKey.objects.filter(pk=stored.pk).values().get()
    assert not [value for value in row.values() if secret in str(value)]


@pytest.mark.django_db
def test_each_key_is_new_and_high_entropy():
    made = {api_key_create(name=f"k{n}")[1] for n in range(20)}
    assert len(made) == 20
    assert len({key.split("_")[1] for key in made}) == 20  # prefixes too


@pytest.mark.django_db
def test_revoke_api_key_by_prefix_name_or_key_and_list_shows_it():
    first, first_key = api_key_create(name="ci")
    second, _ = api_key_create(name="laptop")
    third, third_key = api_key_create(name="batch")
    out = StringIO()
    call_command("revoke_api_key", f"mt_{first.prefix}", stdout=out)
    assert "Revoked API key 'ci'" in out.getvalue()
    call_command("revoke_api_key", "laptop", stdout=StringIO())
    call_command("revoke_api_key", third_key, stdout=StringIO())
    assert ApiKey.objects.active().count() == 0
    assert keyring.check(first_key) is None and keyring.check(third_key) is None
    with pytest.raises(CommandError, match="no active API key"):
        call_command("revoke_api_key", "ci")

    listing = StringIO()
    call_command("list_api_keys", stdout=listing)
    assert "No API keys" in listing.getvalue()
    call_command("list_api_keys", "--all", stdout=listing)
    assert f"mt_{second.prefix}_…  laptop  revoked" in listing.getvalue()
    assert "never" in listing.getvalue()


@pytest.mark.django_db
def test_a_name_shared_by_two_keys_is_not_enough_to_revoke_one():
    api_key_create(name="same")
    api_key_create(name="same")
    with pytest.raises(CommandError, match="give the prefix"):
        call_command("revoke_api_key", "same")


# --- the admin ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_creates_a_key_shows_it_once_and_revokes_it(admin_client):
    response = admin_client.post("/admin/traces/apikey/add/", {"name": "from-admin"})
    assert response.status_code == 200
    api_key = ApiKey.objects.get(name="from-admin")
    page = response.content.decode()
    key = page.split("<code data-api-key>")[1].split("</code>")[0]
    assert KEY_PATTERN.fullmatch(key)
    assert hashlib.sha256(key.encode()).hexdigest() == api_key.key_hash
    assert "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20" + key in page
    # Never again: not in the list, not on its page, not in a message.
    for path in ("/admin/traces/apikey/", f"/admin/traces/apikey/{api_key.pk}/change/"):
        shown = admin_client.get(path).content.decode()
        assert key not in shown and f"mt_{api_key.prefix}_…" in shown
    assert keyring.check(key) is not None

    response = admin_client.post(
        "/admin/traces/apikey/",
        {"action": "revoke", "_selected_action": [api_key.pk]},
        follow=True,
    )
    assert "Revoked 1 API key" in response.content.decode()
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert keyring.check(key) is None
    assert "revoked" in admin_client.get("/admin/traces/apikey/?status=revoked").content.decode()


# --- checking keys in memory ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_known_key_is_checked_without_a_query(django_assert_num_queries):
    _, key = api_key_create(name="hot")
    assert keyring.check(key) is not None  # loads the key set once
    with django_assert_num_queries(0):
        for _ in range(100):
            assert keyring.check(key) is not None
            assert keyring.check(key[:-1] + ("x" if key[-1] != "x" else "y")) is None
            assert keyring.check("not a key") is None


@pytest.mark.django_db
def test_a_flood_of_made_up_keys_costs_a_few_queries_a_second(django_assert_max_num_queries):
    api_key_create(name="real")
    keyring.check("mt_00000000_" + "a" * 32)  # loads the key set
    with django_assert_max_num_queries(int(keys.MISS_LOOKUPS_PER_SECOND) + 1):
        for number in range(500):
            assert keyring.check(f"mt_{number:08x}_" + "a" * 32) is None


@pytest.mark.django_db
def test_a_key_made_by_another_process_works_on_its_first_request():
    _, first = api_key_create(name="first")
    assert keyring.check(first) is not None
    # As if `msgtrace create_api_key` ran elsewhere: the row appears, nobody tells us.
    key, prefix = keys.generate_key()
    ApiKey.objects.create(name="elsewhere", prefix=prefix, key_hash=keys.key_digest(key).hex())
    assert keyring.check(key) is not None


@pytest.mark.django_db(transaction=True)
def test_last_used_is_recorded_off_the_request_path_at_most_once_a_minute(monkeypatch):
    api_key, key = api_key_create(name="busy")
    assert keyring.check(key) is not None
    deadline = time.monotonic() + 10
    while ApiKey.objects.get(pk=api_key.pk).last_used_at is None:
        assert time.monotonic() < deadline, "last_used_at was never written"
        time.sleep(0.05)
    first = ApiKey.objects.get(pk=api_key.pk).last_used_at

    for _ in range(50):
        keyring.check(key)
    keyring.flush()
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first

    later = time.monotonic() + keys.LAST_USED_EVERY_SECONDS + 1
    monkeypatch.setattr(keys.time, "monotonic", lambda: later)
    keyring.invalidate()
    keyring.check(key)
    keyring.flush()
    deadline = time.time() + 10
    while ApiKey.objects.get(pk=api_key.pk).last_used_at == first:
        assert time.time() < deadline, "the next minute's use was never written"
        time.sleep(0.05)


@pytest.mark.django_db
def test_revoking_stops_the_key_in_this_process_at_once():
    api_key, key = api_key_create(name="gone")
    assert keyring.check(key) is not None
    assert api_keys_revoke(keys=[api_key]) == 1
    assert keyring.check(key) is None
    assert api_keys_revoke(keys=[api_key]) == 0  # already revoked


# --- the real exporter against a real server -------------------------------------------


def _export(url: str, trace_name: str, **exporter_options) -> tuple[SpanExportResult, str]:
    """One span through the real OTLP/HTTP exporter; what the exporter made of the answer."""
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", **exporter_options)
    provider = TracerProvider(resource=Resource.create({"service.name": "keyed-agent"}))
    span = provider.get_tracer("tests").start_span(trace_name)
    span.end()
    result = exporter.export([span])
    exporter.shutdown()
    return result, format(span.get_span_context().trace_id, "032x")


def _trace(server, trace_id: str, key: str) -> dict:
    deadline = time.monotonic() + 15
    while True:
        status, _, body = server.request(
            "GET", f"/api/v1/traces/{trace_id}", headers={"x-api-key": key}
        )
        if status == 200:
            return json.loads(body)
        assert status == 404 and time.monotonic() < deadline, (status, body[:200])
        time.sleep(0.05)


def test_the_otel_exporter_with_a_key_is_stored_and_without_one_is_refused(auth_server):
    result, trace_id = _export(
        auth_server.url, "with-key", headers={"authorization": f"Bearer {auth_server.api_key}"}
    )
    assert result == SpanExportResult.SUCCESS
    assert _trace(auth_server, trace_id, auth_server.api_key)["root_span_name"] == "with-key"

    result, trace_id = _export(auth_server.url, "without-key")
    assert result == SpanExportResult.FAILURE
    result, trace_id = _export(auth_server.url, "x-api-key", headers={"x-api-key": "mt_wrong"})
    assert result == SpanExportResult.FAILURE


def test_the_exporter_reads_the_key_from_otel_exporter_otlp_headers(auth_server, monkeypatch):
    # The form docs/security.md gives: the space percent-encoded, as the OTel spec says.
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{auth_server.api_key}"
    )
    result, trace_id = _export(auth_server.url, "env-key")
    assert result == SpanExportResult.SUCCESS
    assert _trace(auth_server, trace_id, auth_server.api_key)["root_span_name"] == "env-key"


def test_msgtrace_sdk_sends_the_key_from_otel_exporter_otlp_headers(auth_server):
    script = textwrap.dedent(
        """
        from msgtrace.sdk import Spans
        from msgtrace.sdk.tracer import tracer_manager

        with Spans.init_flow("keyed_flow") as flow:
            print(format(flow.get_span_context().trace_id, "032x"))
        tracer_manager.shutdown()
        """
    )
    env = {
        **os.environ,
        "MSGTRACE_TELEMETRY_ENABLED": "true",
        "MSGTRACE_OTLP_ENDPOINT": auth_server.url + "/api/v1/traces/export",
        "MSGTRACE_SERVICE_NAME": "sdk-with-key",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{auth_server.api_key}",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    trace = _trace(auth_server, result.stdout.strip(), auth_server.api_key)
    assert trace["service_name"] == "sdk-with-key"


def test_a_key_revoked_by_the_command_stops_working_on_a_running_server(auth_server):
    key = auth_server.manage("create_api_key", "short-lived").stdout.strip()
    body = otlp.body(otlp.span(otlp.new_trace_id(), otlp.new_span_id(), "root"))
    # Made in another process: the server finds it on its first request.
    assert auth_server.post(body, **{"x-api-key": key})[0] == 200
    assert auth_server.manage("revoke_api_key", key).returncode == 0
    started = time.monotonic()
    while auth_server.post(body, **{"x-api-key": key})[0] == 200:
        assert time.monotonic() - started < keys.REFRESH_SECONDS + 5
        time.sleep(0.5)
    listing = auth_server.manage("list_api_keys", "--all").stdout
    line = next(row for row in listing.splitlines() if "short-lived" in row)
    assert "revoked" in line and not line.rstrip().endswith("never")  # its use was recorded


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, free_port):
    server = start_auth_server(
        tmp_path_factory.mktemp("limited"), free_port(), MSGTRACE_INGEST_RATE_LIMIT="5"
    )
    yield server
    server.stop()


def test_a_key_over_its_span_rate_gets_429_with_retry_after(limited_server):
    key = {"Authorization": f"Bearer {limited_server.api_key}"}
    trace_id = otlp.new_trace_id()
    # 5 spans/s holds 50; one batch of 70 is let in and leaves the key 20 spans in debt.
    many = otlp.body(*(otlp.span(trace_id, otlp.new_span_id(), f"s{n}") for n in range(70)))
    assert limited_server.post(many, **key)[0] == 200
    one = otlp.body(otlp.span(otlp.new_trace_id(), otlp.new_span_id(), "more"))
    status, headers, body = limited_server.post(b"{}", "application/json", **key)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 5
    assert json.loads(body)["code"] == 8  # RESOURCE_EXHAUSTED
    # Another key has its own budget.
    other = limited_server.manage("create_api_key", "other").stdout.strip()
    assert limited_server.post(one, **{"x-api-key": other})[0] == 200
    # After the wait, the first key sends again.
    time.sleep(int(headers["Retry-After"]))
    assert limited_server.post(one, **key)[0] == 200

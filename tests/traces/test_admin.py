"""The Django admin, logged in as a superuser: every page of every registered model."""

from __future__ import annotations

import time

import pytest
from django.contrib.admin.models import LogEntry

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from search.models import SavedFilter, SearchHistory
from tests import otlp
from traces import admin as traces_admin
from traces import broadcast
from traces.models import Span, Trace

pytestmark = pytest.mark.django_db
MS = 1_000_000
DAY_NS = 86_400_000 * MS
NOW_NS = time.time_ns()


def make_trace(*, service="svc", workflow="answer", error=False, days_ago=0.0, children=1):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = NOW_NS - int(days_ago * DAY_NS) - 60_000 * MS
    spans = [otlp.span(trace_id, root, f"root {workflow}", base_ns=base, workflow__name=workflow)]
    for i in range(children):
        spans.append(
            otlp.span(
                trace_id,
                otlp.new_span_id(),
                f"chat {i}",
                parent=root,
                base_ns=base,
                start_ms=2 + i,
                duration_ms=1,
                error="boom" if error and i == 0 else None,
                gen_ai__request__model="gpt-4o",
                gen_ai__usage__input_tokens=10,
            )
        )
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))
    return trace_id


@pytest.fixture(autouse=True)
def _quick_password_hashing(settings):
    # admin_client's superuser is made per test; the real hasher takes ~0.3 s each time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def traces():
    return {
        "web": make_trace(service="web", workflow="checkout", children=2),
        "failed": make_trace(service="batch", workflow="nightly", error=True, days_ago=10),
        "old": make_trace(service="batch", workflow="report", days_ago=40),
    }


def listed(response) -> set[str]:
    """Trace ids shown in a trace changelist."""
    assert response.status_code == 200
    return {trace.trace_id for trace in response.context["cl"].result_list}


# --- traces -----------------------------------------------------------------------------------


def test_trace_changelist_shows_the_summary_columns(admin_client, traces):
    response = admin_client.get("/admin/traces/trace/")
    assert listed(response) == set(traces.values())
    page = response.content.decode()
    for heading in ("Started", "Workflow name", "Service name", "Duration", "Span count",
                    "Error count", "Total tokens", "Cost"):  # fmt: skip
        assert heading in page
    assert "checkout" in page and " UTC" in page
    # Newest first.
    assert [t.trace_id for t in response.context["cl"].result_list][0] == traces["web"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("service=batch", {"failed", "old"}),
        ("errors=yes", {"failed"}),
        ("errors=no", {"web", "old"}),
        ("started=24h", {"web"}),
        ("started=30d", {"web", "failed"}),
        ("started=older-7d", {"failed", "old"}),
        ("started=older-30d", {"old"}),
        ("service=batch&errors=no", {"old"}),
    ],
)
def test_trace_changelist_filters(admin_client, traces, query, expected):
    response = admin_client.get(f"/admin/traces/trace/?{query}")
    assert listed(response) == {traces[name] for name in expected}


def test_the_service_filter_lists_the_services(admin_client, traces):
    page = admin_client.get("/admin/traces/trace/").content.decode()
    assert "?service=batch" in page and "?service=web" in page


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("checkout", {"web"}),
        ("root night", {"failed"}),  # the root span's name, from its start
        ("heck", set()),  # names match from their start only: an index can serve that
    ],
)
def test_trace_search_by_name_prefix(admin_client, traces, term, expected):
    response = admin_client.get("/admin/traces/trace/", {"q": term})
    assert listed(response) == {traces[name] for name in expected}


def test_trace_search_by_exact_trace_id_in_any_case(admin_client, traces):
    response = admin_client.get("/admin/traces/trace/", {"q": traces["old"].upper()})
    assert listed(response) == {traces["old"]}


def test_trace_page_is_read_only_with_its_first_spans_and_links(admin_client, traces):
    trace_id = traces["web"]
    response = admin_client.get(f"/admin/traces/trace/{trace_id}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "View trace" in page and 'name="_save"' not in page
    assert f'href="/traces/{trace_id}"' in page  # the msgtrace trace page
    assert f"/admin/traces/span/?trace={trace_id}" in page  # all its spans
    assert "root checkout" in page and "chat 1" in page
    assert "+2.0 ms" in page  # a span's start, from the trace's start


def test_trace_page_shows_a_bounded_number_of_spans(admin_client, monkeypatch):
    monkeypatch.setattr(traces_admin, "SPANS_SHOWN", 3)
    trace_id = make_trace(children=6)
    response = admin_client.get(f"/admin/traces/trace/{trace_id}/change/")
    formset = response.context["inline_admin_formsets"][0].formset
    assert len(formset.forms) == 3
    assert [form.instance.name for form in formset.forms] == ["root answer", "chat 0", "chat 1"]


def test_trace_list_and_page_take_the_same_queries_for_few_or_many_rows(
    admin_client, django_assert_max_num_queries
):
    make_trace()
    with django_assert_max_num_queries(12) as few:
        admin_client.get("/admin/traces/trace/")
    for _ in range(5):
        make_trace(children=3)
    with django_assert_max_num_queries(len(few.captured_queries)):
        admin_client.get("/admin/traces/trace/")
    trace_id = make_trace(children=20)
    with django_assert_max_num_queries(len(few.captured_queries)):
        admin_client.get(f"/admin/traces/trace/{trace_id}/change/")


def test_traces_cannot_be_added_or_edited(admin_client, traces):
    assert admin_client.get("/admin/traces/trace/add/").status_code == 403
    response = admin_client.post(f"/admin/traces/trace/{traces['web']}/change/", {})
    assert response.status_code == 403


def test_deleting_a_trace_from_its_page_deletes_its_spans_and_tells_live_pages(
    admin_client, traces, django_capture_on_commit_callbacks
):
    trace_id = traces["web"]
    confirm = admin_client.get(f"/admin/traces/trace/{trace_id}/delete/")
    assert confirm.status_code == 200
    assert "Spans: 3" in confirm.content.decode()  # a count, not a list of every span
    broadcast._pending.take()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/traces/trace/{trace_id}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Trace.objects.filter(pk=trace_id).exists()
    assert not Span.objects.filter(trace_id=trace_id).exists()
    assert broadcast._pending.take()[2] == {trace_id}


def test_the_delete_action_deletes_the_selected_traces_and_their_spans(
    admin_client, traces, django_capture_on_commit_callbacks
):
    chosen = [traces["failed"], traces["old"]]
    form = {"action": "delete_selected", "_selected_action": chosen}
    confirm = admin_client.post("/admin/traces/trace/", form)
    page = confirm.content.decode()
    assert "Traces: 2" in page and "Spans: 4" in page
    broadcast._pending.take()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/traces/trace/", {**form, "post": "yes"})
    assert response.status_code == 302
    assert set(Trace.objects.values_list("pk", flat=True)) == {traces["web"]}
    assert not Span.objects.filter(trace_id__in=chosen).exists()
    assert broadcast._pending.take()[2] == set(chosen)
    assert LogEntry.objects.count() == 2  # the admin's history records each deletion


def test_the_delete_action_refuses_more_than_it_may_select(admin_client, traces, monkeypatch):
    monkeypatch.setattr(traces_admin, "MAX_SELECTED", 2)
    form = {"action": "delete_selected", "select_across": "1", "index": "0",
            "_selected_action": [traces["web"]], "post": "yes"}  # fmt: skip
    response = admin_client.post("/admin/traces/trace/", form, follow=True)
    assert "Select at most 2 traces to delete here" in response.content.decode()
    assert Trace.objects.count() == 3


def test_a_changelist_counts_only_up_to_the_cap(admin_client, traces, monkeypatch):
    monkeypatch.setattr(traces_admin.CappedPaginator, "cap", 2)
    page = admin_client.get("/admin/traces/trace/").content.decode()
    assert "more than 2 traces" in page
    page = admin_client.get("/admin/traces/trace/?service=batch").content.decode()
    assert "2 traces" in page and "more than" not in page


# --- spans ------------------------------------------------------------------------------------


def spans_listed(response) -> set[str]:
    assert response.status_code == 200
    return {span.name for span in response.context["cl"].result_list}


def test_span_changelist_shows_spans_newest_first(admin_client, traces):
    response = admin_client.get("/admin/traces/span/")
    assert len(response.context["cl"].result_list) == Span.objects.count() == 7
    page = response.content.decode()
    assert "chat 0" in page and "gpt-4o" in page
    assert f"/admin/traces/trace/{traces['old']}/change/" in page


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("is_error__exact=1", {"chat 0"}),
        ("span_type=llm", {"chat 0", "chat 1"}),
        ("span_type=-", {"root checkout", "root nightly", "root report"}),
        ("service=web", {"root checkout", "chat 0", "chat 1"}),
    ],
)
def test_span_changelist_filters(admin_client, traces, query, names):
    assert spans_listed(admin_client.get(f"/admin/traces/span/?{query}")) == names


@pytest.mark.parametrize("query", ["", "span_type=llm", "is_error__exact=0"])
def test_span_pages_are_the_same_whether_found_through_the_index_or_in_key_order(
    admin_client, traces, monkeypatch, query
):
    monkeypatch.setattr(traces_admin.SpanAdmin, "list_per_page", 2)

    def pages(cap: int) -> list[list[int]]:
        monkeypatch.setattr(traces_admin.CappedPaginator, "cap", cap)
        shown = []
        for number in (1, 2):
            response = admin_client.get(f"/admin/traces/span/?{query}&p={number}")
            shown.append([span.pk for span in response.context["cl"].result_list])
        return shown

    # Under the cap (few matches) SQLite pages through the index; over it, in key order.
    assert pages(cap=100) == pages(cap=4)
    expected = list(Span.objects.order_by("-pk").values_list("pk", flat=True))
    if not query:
        assert pages(cap=100) == [expected[:2], expected[2:4]]


def test_the_spans_of_one_trace(admin_client, traces):
    response = admin_client.get(f"/admin/traces/span/?trace={traces['web']}")
    assert spans_listed(response) == {"root checkout", "chat 0", "chat 1"}


def test_span_search_by_exact_span_id_or_trace_id(admin_client, traces):
    span = Span.objects.get(trace_id=traces["failed"], name="chat 0")
    response = admin_client.get("/admin/traces/span/", {"q": span.span_id.upper()})
    assert [s.pk for s in response.context["cl"].result_list] == [span.pk]
    response = admin_client.get("/admin/traces/span/", {"q": traces["failed"]})
    assert spans_listed(response) == {"root nightly", "chat 0"}
    assert spans_listed(admin_client.get("/admin/traces/span/", {"q": "chat"})) == set()


def test_span_page_is_read_only_and_links_to_its_trace(admin_client, traces):
    span = Span.objects.get(trace_id=traces["failed"], name="chat 0")
    response = admin_client.get(f"/admin/traces/span/{span.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "View span" in page and 'name="_save"' not in page
    assert f'href="/traces/{span.trace_id}/spans/{span.span_id}"' in page
    assert "gen_ai.request.model" in page and "boom" in page


def test_span_list_takes_the_same_queries_for_few_or_many_rows(
    admin_client, django_assert_max_num_queries
):
    make_trace()
    with django_assert_max_num_queries(12) as few:
        admin_client.get("/admin/traces/span/")
    for _ in range(5):
        make_trace(children=5)
    with django_assert_max_num_queries(len(few.captured_queries)):
        admin_client.get("/admin/traces/span/")


def test_spans_cannot_be_added_edited_or_deleted_alone(admin_client, traces):
    span = Span.objects.first()
    assert admin_client.get("/admin/traces/span/add/").status_code == 403
    assert admin_client.post(f"/admin/traces/span/{span.pk}/change/", {}).status_code == 403
    assert admin_client.get(f"/admin/traces/span/{span.pk}/delete/").status_code == 403


# --- saved filters and history ----------------------------------------------------------------


def test_saved_filter_pages(admin_client):
    saved = SavedFilter.objects.create(name="slow errors", query="error:true duration:>2s")
    page = admin_client.get("/admin/search/savedfilter/").content.decode()
    assert "slow errors" in page and "/traces?q=error%3Atrue+duration%3A%3E2s" in page
    assert admin_client.get(f"/admin/search/savedfilter/{saved.pk}/change/").status_code == 200
    assert admin_client.get("/admin/search/savedfilter/", {"q": "slow"}).status_code == 200


def test_a_saved_filter_whose_query_does_not_parse_is_refused(admin_client):
    response = admin_client.post(
        "/admin/search/savedfilter/add/", {"name": "broken", "query": "duration:>abc"}
    )
    assert response.status_code == 200
    assert "The query does not parse" in response.content.decode()
    assert not SavedFilter.objects.exists()
    response = admin_client.post(
        "/admin/search/savedfilter/add/", {"name": "fine", "query": "service:web"}
    )
    assert response.status_code == 302 and SavedFilter.objects.get().query == "service:web"


def test_search_history_pages(admin_client):
    from django.utils import timezone

    entry = SearchHistory.objects.create(query="model:gpt-4o", last_used=timezone.now())
    page = admin_client.get("/admin/search/searchhistory/").content.decode()
    assert "model:gpt-4o" in page
    assert admin_client.get(f"/admin/search/searchhistory/{entry.pk}/change/").status_code == 200
    assert admin_client.get("/admin/search/searchhistory/add/").status_code == 403


def test_the_admin_index_lists_every_registered_model(admin_client):
    page = admin_client.get("/admin/").content.decode()
    for model in ("traces/trace", "traces/span", "traces/modelprice", "search/savedfilter",
                  "search/searchhistory"):  # fmt: skip
        assert f"/admin/{model}/" in page


def test_model_price_pages(admin_client):
    from traces.models import ModelPrice

    price = ModelPrice.objects.create(
        pattern="acme-small*",
        provider="acme",
        input_per_million="0.15",
        output_per_million="0.60",
        valid_from="2024-07-18",
    )
    page = admin_client.get("/admin/traces/modelprice/").content.decode()
    assert "acme-small*" in page
    assert admin_client.get("/admin/traces/modelprice/?provider=acme").status_code == 200
    assert admin_client.get("/admin/traces/modelprice/", {"q": "acme"}).status_code == 200
    assert admin_client.get(f"/admin/traces/modelprice/{price.pk}/change/").status_code == 200
    assert admin_client.get("/admin/traces/modelprice/add/").status_code == 200

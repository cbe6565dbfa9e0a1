"""The pages, in-process: full pages, HTMX fragments, validation and query counts."""

from __future__ import annotations

import time

import pytest

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from traces.models import Trace

pytestmark = pytest.mark.django_db
MS = 1_000_000
HTMX = {"HTTP_HX_REQUEST": "true"}
USER_TURN = '[{"role": "user", "parts": [{"type": "text", "content": "Where is my parcel?"}]}]'


def store(*spans, service="svc"):
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))


def agent_trace(*, service="svc", workflow="answer", error=False, minutes_ago=1, children=2):
    """A root agent span with llm children; the first child fails when ``error``."""
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = time.time_ns() - minutes_ago * 60_000 * MS
    spans = [
        otlp.span(
            trace_id, root, "invoke_agent helper", base_ns=base, duration_ms=900,
            workflow__name=workflow, gen_ai__operation__name="invoke_agent",
        )
    ]  # fmt: skip
    for i in range(children):
        spans.append(
            otlp.span(
                trace_id, otlp.new_span_id(), f"chat gpt-4o #{i}", parent=root, base_ns=base,
                start_ms=10 + i * 100, duration_ms=80,
                error="rate limited" if error and i == 0 else None,
                gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o",
                gen_ai__usage__input_tokens=100, gen_ai__usage__output_tokens=20,
                gen_ai__input__messages=USER_TURN,
            )
        )  # fmt: skip
    store(*spans, service=service)
    return trace_id, spans


def span_id_of(span) -> str:
    return span.span_id.hex()


# --- Dashboard ---------------------------------------------------------------------------


def test_empty_install_shows_how_to_send_a_first_trace(client):
    response = client.get("/", HTTP_HOST="localhost:4321")
    assert response.status_code == 200
    text = response.content.decode()
    assert "Send your first trace" in text
    assert "http://localhost:4321/v1/traces" in text
    assert "MSGTRACE_OTLP_ENDPOINT=http://localhost:4321/api/v1/traces/export" in text


def test_dashboard_shows_totals_recent_traces_and_errors(client):
    agent_trace(workflow="refunds")
    failing, _ = agent_trace(workflow="refunds", error=True)
    response = client.get("/?window=24h")
    text = response.content.decode()
    assert response.status_code == 200
    assert "Send your first trace" not in text
    assert "50%" in text  # error rate: one trace of two
    assert f"/traces/{failing}" in text
    assert "refunds" in text


def test_dashboard_window_switch_returns_only_the_fragment(client):
    agent_trace(minutes_ago=3 * 24 * 60)  # three days ago: outside 24h, inside 7d
    day = client.get("/?window=24h", **HTMX).content.decode()
    week = client.get("/?window=7d", **HTMX).content.decode()
    assert "<html" not in day and "<html" not in week
    assert "No traces started in this window" in day
    assert "No traces started in this window" not in week


def test_dashboard_refuses_an_unknown_window(client):
    response = client.get("/?window=fortnight")
    assert response.status_code == 400
    assert "window must be one of 1h, 24h, 7d, all" in response.content.decode()


def test_dashboard_query_count_does_not_grow_with_traces(client, django_assert_max_num_queries):
    for _ in range(3):
        agent_trace()
    with django_assert_max_num_queries(9):
        client.get("/?window=all")
    for _ in range(20):
        agent_trace(error=True)
    with django_assert_max_num_queries(9):
        client.get("/?window=all")


# --- Trace list --------------------------------------------------------------------------


def test_list_filters_by_service_and_errors(client):
    agent_trace(service="billing")
    failing, _ = agent_trace(service="billing", error=True)
    other, _ = agent_trace(service="search")
    text = client.get("/traces?service=billing&has_errors=true").content.decode()
    assert failing in text
    assert other not in text


def test_list_fragment_for_htmx_has_no_page_around_it(client):
    trace_id, _ = agent_trace()
    response = client.get("/traces?sort=-duration", **HTMX)
    text = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in text and 'id="filters"' not in text
    assert trace_id in text


def test_list_history_restore_gets_the_whole_page(client):
    response = client.get("/traces", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in response.content.decode()


def test_list_search_query_filters(client):
    slow, _ = agent_trace(workflow="slow-one")
    fast, _ = agent_trace(workflow="fast-one")
    text = client.get("/traces", {"q": "workflow:slow*"}).content.decode()
    assert slow in text and fast not in text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"q": "duration:>"}, "Search:"),
        ({"min_duration": "fast"}, "min_duration"),
        ({"since": "yesterday-ish"}, "since"),
        ({"sort": "name; DROP TABLE"}, "sort must be one of"),
        ({"page": "two"}, "page must be a whole number from 1 to 1,000,000"),
        ({"page": "9" * 30}, "page must be a whole number"),
        ({"page": "²"}, "page must be a whole number"),
        ({"has_errors": "maybe"}, "has_errors"),
    ],
)
def test_bad_list_input_is_a_400_that_says_what_was_wrong_and_shows_no_rows(client, query, message):
    trace_id, _ = agent_trace()
    response = client.get("/traces", query, **HTMX)
    text = response.content.decode()
    assert response.status_code == 400
    assert message in text
    assert "These filters could not be applied" in text
    assert trace_id not in text
    assert Trace.objects.filter(pk=trace_id).exists()


def test_query_error_points_at_the_position(client):
    text = client.get("/traces", {"q": "duration:>"}).content.decode()
    assert "duration:&gt;\n          ^" in text


def test_list_sorts_by_duration_both_ways(client):
    ids = []
    for children in (1, 3, 2):
        trace_id, spans = agent_trace(children=children)
        ids.append(trace_id)
    # All roots last 900 ms; compare by span count instead, a column sorted the same way.
    descending = client.get("/traces?sort=-spans").content.decode()
    ascending = client.get("/traces?sort=spans").content.decode()
    order = sorted(ids, key=lambda t: Trace.objects.get(pk=t).span_count)
    assert descending.index(order[-1]) < descending.index(order[0])
    assert ascending.index(order[0]) < ascending.index(order[-1])


def test_list_pages_fifty_at_a_time(client):
    for _ in range(52):
        agent_trace(children=0)
    first = client.get("/traces").content.decode()
    second = client.get("/traces?page=2").content.decode()
    assert "1–50\n" in first and 'rel="next"' in first
    # The last page knows its total without counting; the count itself is its own request.
    assert "51–52\n      of <span" in second and 'rel="next"' not in second
    assert first.count('name="ids"') == 50 and second.count('name="ids"') == 2
    assert client.get("/traces?page=2&count=1", **HTMX).content == b"52"
    beyond = client.get("/traces?page=9").content.decode()
    assert "Nothing on page 9" in beyond and 'rel="prev"' in beyond


def test_count_of_a_bad_filter_is_a_400(client):
    assert client.get("/traces?count=1&q=duration:>", **HTMX).status_code == 400


def test_list_query_count_does_not_grow_with_rows(client, django_assert_max_num_queries):
    for _ in range(30):
        agent_trace()
    # count, page, service and workflow choices, saved filters, history, session
    with django_assert_max_num_queries(7):
        response = client.get("/traces")
    assert response.content.decode().count('name="ids"') == 30


# --- Delete ------------------------------------------------------------------------------


def test_bulk_delete_without_javascript_asks_first(client):
    trace_id, _ = agent_trace()
    response = client.post("/traces/delete", {"ids": [trace_id]})
    assert response.status_code == 200
    assert "Delete 1 trace?" in response.content.decode()
    assert Trace.objects.filter(pk=trace_id).exists()
    response = client.post(
        "/traces/delete", {"ids": [trace_id], "confirmed": "yes", "next": "/traces?service=svc"}
    )
    assert response.status_code == 302 and response["Location"] == "/traces?service=svc"
    assert not Trace.objects.filter(pk=trace_id).exists()


def test_bulk_delete_over_htmx_deletes_and_says_so(client):
    keep, _ = agent_trace()
    gone = [agent_trace()[0] for _ in range(2)]
    response = client.post("/traces/delete", {"ids": gone}, **HTMX)
    assert response.status_code == 204
    assert "Deleted 2 traces" in response["HX-Trigger"]
    assert list(Trace.objects.values_list("pk", flat=True)) == [keep]


@pytest.mark.parametrize("ids", [[], ["not-an-id"], ["0" * 31 + "g"]])
def test_bulk_delete_refuses_bad_ids_and_deletes_nothing(client, ids):
    trace_id, _ = agent_trace()
    response = client.post("/traces/delete", {"ids": ids, "confirmed": "yes"})
    assert response.status_code == 400
    assert Trace.objects.filter(pk=trace_id).exists()


def test_delete_never_redirects_off_site(client):
    trace_id, _ = agent_trace()
    response = client.post(
        "/traces/delete", {"ids": [trace_id], "confirmed": "yes", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/traces"


def test_trace_delete_over_htmx_sends_the_browser_to_the_list(client):
    trace_id, _ = agent_trace()
    response = client.post(f"/traces/{trace_id}/delete", **HTMX)
    assert response["HX-Redirect"] == "/traces"
    assert not Trace.objects.filter(pk=trace_id).exists()


def test_delete_needs_post(client):
    trace_id, _ = agent_trace()
    assert client.get(f"/traces/{trace_id}/delete").status_code == 405
    assert client.get("/traces/delete").status_code == 405


# --- Trace detail ------------------------------------------------------------------------


def test_trace_page_shows_header_and_rows_in_tree_order(client):
    trace_id, spans = agent_trace(children=2)
    response = client.get(f"/traces/{trace_id}")
    text = response.content.decode()
    assert response.status_code == 200
    assert "2 spans" not in text and "3 spans" in text
    root, first, second = (span_id_of(s) for s in spans)
    assert text.index(f'data-span="{root}"') < text.index(f'data-span="{first}"')
    assert text.index(f'data-span="{first}"') < text.index(f'data-span="{second}"')
    assert f'data-parent="{root}"' in text
    assert "gpt-4o" in text


def test_trace_page_query_count_is_constant(client, django_assert_num_queries):
    trace_id, _ = agent_trace(children=40)
    # the trace, its span rows, other runs of its workflow (for "compare with…")
    with django_assert_num_queries(3):
        client.get(f"/traces/{trace_id}")


def test_jump_to_first_error_links_the_failing_span(client):
    trace_id, spans = agent_trace(error=True)
    text = client.get(f"/traces/{trace_id}").content.decode()
    assert f'href="/traces/{trace_id}/spans/{span_id_of(spans[1])}" data-jump-error' in text


def test_span_filter_keeps_matches_and_their_ancestors(client):
    trace_id, spans = agent_trace(children=3)
    response = client.get(f"/traces/{trace_id}?filter=%232", **HTMX)
    text = response.content.decode()
    assert "<html" not in text
    assert f'data-span="{span_id_of(spans[0])}"' in text  # the root, an ancestor
    assert f'data-span="{span_id_of(spans[3])}"' in text  # "chat gpt-4o #2"
    assert f'data-span="{span_id_of(spans[1])}"' not in text


def test_big_trace_renders_a_window_and_more_on_request(client):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = time.time_ns() - 60_000 * MS
    spans = [otlp.span(trace_id, root, "root", base_ns=base, duration_ms=5000)]
    spans += [
        otlp.span(trace_id, otlp.new_span_id(), f"step {i}", parent=root, base_ns=base, start_ms=i)
        for i in range(700)
    ]
    store(*spans)
    text = client.get(f"/traces/{trace_id}").content.decode()
    assert text.count("data-nav-row") == 500
    assert "Show 201 more spans" in text
    more = client.get(f"/traces/{trace_id}?offset=500&dir=down", **HTMX).content.decode()
    assert "<html" not in more and 'class="timeline-view' not in more
    assert more.count("data-nav-row") == 201
    assert "more span" not in more


def test_span_page_opens_the_window_that_holds_the_span(client):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = time.time_ns() - 60_000 * MS
    ids = [otlp.new_span_id() for _ in range(700)]
    spans = [otlp.span(trace_id, root, "root", base_ns=base, duration_ms=5000)]
    spans += [
        otlp.span(trace_id, span_id, f"step {i}", parent=root, base_ns=base, start_ms=i)
        for i, span_id in enumerate(ids)
    ]
    store(*spans)
    text = client.get(f"/traces/{trace_id}/spans/{ids[650]}").content.decode()
    assert f'data-span="{ids[650]}"' in text and "is-selected" in text
    assert "Show 500 earlier spans" in text


def test_span_panel_fragment_shows_attributes_conversation_and_exception(client):
    trace_id, spans = agent_trace(error=True)
    response = client.get(f"/traces/{trace_id}/spans/{span_id_of(spans[1])}", **HTMX)
    text = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in text
    assert "Where is my parcel?" in text  # the user turn
    assert "ValueError" in text and "rate limited" in text
    assert "gen_ai.request.model" in text
    assert "invoke_agent helper" in text  # parent link


def test_span_page_without_htmx_is_the_whole_trace_page(client, django_assert_num_queries):
    trace_id, spans = agent_trace()
    with django_assert_num_queries(5):
        response = client.get(f"/traces/{trace_id}/spans/{span_id_of(spans[2])}")
    text = response.content.decode()
    assert "<html" in text and 'id="panel"' in text and "chat gpt-4o #1" in text


def test_unknown_trace_is_a_404_that_names_it(client):
    response = client.get("/traces/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert "No trace <code>0123456789abcdef0123456789abcdef</code>" in response.content.decode()
    response = client.get("/traces/hello")
    assert response.status_code == 404
    assert "This is not a trace id" in response.content.decode()


def test_unknown_span_is_a_404(client):
    trace_id, _ = agent_trace()
    response = client.get(f"/traces/{trace_id}/spans/0123456789abcdef")
    assert response.status_code == 404
    assert "No span" in response.content.decode()


def test_span_strings_are_escaped_in_every_page(client):
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">{{ 7*7 }}'
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    store(
        otlp.span(
            trace_id, root, hostile, workflow__name=hostile, error=hostile,
            **{"gen_ai.request.model": hostile, "x.key": hostile},
        ),
        service=hostile,
    )  # fmt: skip
    pages = [
        "/?window=all",
        "/traces",
        f"/traces?q={hostile}",
        f"/traces/{trace_id}",
        f"/traces/{trace_id}?view=tree",
        f"/traces/{trace_id}/spans/{root}",
    ]
    for page in pages:
        text = client.get(page).content.decode()
        assert "<script>alert(1)" not in text, page
        assert "<img src=x" not in text, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text or page.startswith("/traces?q"), page
        assert "{{ 7*7 }}" in text, page  # template syntax in data stays text


def test_overview_folds_groups_into_the_same_totals_and_tops_as_separate_queries():
    for service, workflow, error in [("a", "w1", False), ("a", "w2", True), ("b", "w1", True)]:
        agent_trace(service=service, workflow=workflow, error=error)
    traces = Trace.objects.all()
    grouped, separate = traces.overview(), traces.overview(max_groups=0)  # 0: the fallback
    assert grouped["totals"] == separate["totals"] == traces.totals()
    for key in ("top_services", "top_workflows"):
        assert [(r["traces"], r["errors"]) for r in grouped[key]] == [
            (r["traces"], r["errors"]) for r in separate[key]
        ]
        assert [r["mean_ns"] for r in grouped[key]] == pytest.approx(
            [r["mean_ns"] for r in separate[key]]
        )
    assert [r["service_name"] for r in grouped["top_services"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("offset=-5", "offset must be a whole number"),
        ("offset=%C2%B2", "offset must be a whole number"),
        ("view=gantt", "view must be timeline or tree"),
        ("dir=sideways", "dir must be up or down"),
        ("filter=" + "x" * 201, "filter is at most 200 characters"),
    ],
)
def test_bad_timeline_parameters_are_a_400_that_says_why(client, query, message):
    trace_id, spans = agent_trace()
    for path in (f"/traces/{trace_id}", f"/traces/{trace_id}/spans/{span_id_of(spans[1])}"):
        response = client.get(f"{path}?{query}", **HTMX)
        assert response.status_code == 400
        assert message in response.content.decode()

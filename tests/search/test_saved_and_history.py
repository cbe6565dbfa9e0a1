"""Saved filters and search history: stored on the server, shown beside the search box."""

from __future__ import annotations

import json

import pytest

from search.models import HISTORY_SIZE, SavedFilter, SearchHistory, history_record

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_running_a_search_from_the_list_records_it(client):
    client.get("/traces", {"q": "error:true"})
    client.get("/traces", {"q": "service:api"})
    assert list(SearchHistory.objects.newest_first().values_list("query", flat=True)) == [
        "service:api",
        "error:true",
    ]


def test_a_query_that_does_not_parse_is_not_remembered(client):
    client.get("/traces", {"q": "duration:>"})
    assert not SearchHistory.objects.exists()


def test_the_api_does_not_write_history(client):
    client.get("/api/v1/traces", {"q": "error:true"})
    assert not SearchHistory.objects.exists()


def test_history_keeps_the_last_twenty_distinct_queries_newest_first():
    for i in range(HISTORY_SIZE + 5):
        history_record(query=f"spans:>{i} ")
    history_record(query="spans:>7")  # used again: moves to the top, not duplicated
    queries = list(SearchHistory.objects.newest_first().values_list("query", flat=True))
    assert len(queries) == HISTORY_SIZE
    assert queries[0] == "spans:>7"
    assert len(set(queries)) == HISTORY_SIZE
    assert "spans:>0" not in queries


def test_typing_a_query_in_steps_keeps_only_the_finished_one():
    for step in ("dur", "duration:", "duration:>2", "duration:>2s"):
        history_record(query=step)
    assert list(SearchHistory.objects.values_list("query", flat=True)) == ["duration:>2s"]


def test_history_is_listed_on_the_list_page_and_can_be_cleared(client):
    history_record(query="model:gpt-4o*")
    text = client.get("/traces").content.decode()
    assert "model:gpt-4o*" in text
    response = client.post("/search/history/clear", **HTMX)
    assert response.status_code == 200
    assert not SearchHistory.objects.exists()
    assert "No searches yet" in response.content.decode()


def test_save_rename_and_delete_a_filter(client):
    response = client.post(
        "/search/saved", {"name": "Slow errors", "q": "duration:>2s error:true"}, **HTMX
    )
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger"])["msgtrace:toast"]["message"] == "Saved “Slow errors”"
    saved = SavedFilter.objects.get()
    assert saved.query == "duration:>2s error:true"
    assert "Slow errors" in client.get("/traces").content.decode()

    client.post(f"/search/saved/{saved.pk}/rename", {"name": "Slow failures"}, **HTMX)
    saved.refresh_from_db()
    assert saved.name == "Slow failures"

    client.post(f"/search/saved/{saved.pk}/delete", **HTMX)
    assert not SavedFilter.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "", "q": "error:true"}, "give the filter a name"),
        ({"name": "x" * 101, "q": "error:true"}, "at most 100 characters"),
        ({"name": "Empty", "q": "  "}, "there is no search to save"),
        ({"name": "Broken", "q": "duraton:>1s"}, "does not parse"),
        ({"name": "Taken", "q": "error:true"}, "already exists"),
    ],
)
def test_bad_saved_filters_are_refused_with_a_reason(client, data, message):
    SavedFilter.objects.create(name="Taken", query="error:false")
    response = client.post("/search/saved", data, **HTMX)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert SavedFilter.objects.count() == 1


def test_renaming_onto_an_existing_name_is_refused(client):
    SavedFilter.objects.create(name="A", query="error:true")
    b = SavedFilter.objects.create(name="B", query="error:false")
    response = client.post(f"/search/saved/{b.pk}/rename", {"name": "A"}, **HTMX)
    assert response.status_code == 400
    b.refresh_from_db()
    assert b.name == "B"


def test_without_javascript_saving_redirects_back_to_the_search(client):
    response = client.post("/search/saved", {"name": "Mine", "q": "user:alice"})
    assert response.status_code == 302
    assert response["Location"] == "/traces?q=user%3Aalice"


def test_unknown_saved_filter_is_a_404_and_get_is_refused(client):
    assert client.post("/search/saved/999/delete").status_code == 404
    assert client.get("/search/saved").status_code == 405


def test_re_running_the_newest_query_writes_nothing(django_assert_num_queries):
    history_record(query="error:true")
    with django_assert_num_queries(1):  # one read: it already is the newest
        assert history_record(query="error:true") is False

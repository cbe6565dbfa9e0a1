"""Hostile text cannot make the browser run code or reach another host, on any page.

test_xss.py checks that script payloads stay text. Here a wider corpus (markdown images,
``<img src=http://…>``, CSS ``url()``, ``<link>``, ``<meta http-equiv=refresh>``,
``<iframe>``, ``<object>``, ``<base>``, forms, ``data:`` and ``javascript:`` URLs, SVG,
template syntax) goes into every span field, resource attribute, service name and scope,
and into saved-filter names and search queries. Every page that shows them, the admin
and the JSON API included, is loaded in Chromium while every request the browser attempts
is recorded: none may leave loopback, nothing may run, and the Content-Security-Policy
must neither be missing nor block anything of our own (a violation on a page with only
escaped text means our own markup broke under the policy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

import pytest
from opentelemetry.trace import Link, SpanContext, TraceFlags
from playwright.sync_api import Page, expect

from tests.browser import MS, Spans, hex_span_id, hex_trace_id, now_ns
from tests.server import MsgtraceServer

EVIL = "evil.example"
CORPUS = {
    "script": "<script>window.__xss=1</script>",
    "handler": '<img src=x onerror="window.__xss=1">',
    "svg": '"><svg onload="window.__xss=1"><script>window.__xss=1</script></svg>',
    "javascript-url": "javascript:window.__xss=1",
    "data-url": "data:text/html,<script>window.__xss=1</script>",
    "markdown-image": f"![x](http://{EVIL}/markdown.png)",
    "img": f"<img src=http://{EVIL}/img.png>",
    "css-url": f'<div style="background:url(http://{EVIL}/css.png)">url(http://{EVIL}/u.png)',
    "link": f"<link rel=stylesheet href=http://{EVIL}/style.css>",
    "meta-refresh": f'<meta http-equiv="refresh" content="0;url=http://{EVIL}/refresh">',
    "iframe": f"<iframe src=http://{EVIL}/frame></iframe>",
    "object": f"<object data=http://{EVIL}/object></object><embed src=http://{EVIL}/embed>",
    "base": f"<base href=http://{EVIL}/>",
    "form": f"<form action=http://{EVIL}/form><button>go</button></form>",
    "template": "{{ 7*7 }} {% debug %} ${7*7}",
}
PAYLOADS = list(CORPUS.values())
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
USERNAME, PASSWORD = "xss-admin", "a long password for the xss admin"

# What could run code or leave the page: handler attributes, URLs that run script, inline
# scripts, and the corpus's own elements, had any of it been parsed as markup.
_RUNNABLE = """() => {
  const found = [];
  const urls = ["href", "src", "action", "formaction", "data", "poster", "srcdoc", "xlink:href"];
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, "").toLowerCase();
      if (name.startsWith("on")) found.push(`${el.tagName} ${name}`);
      if (urls.includes(name) && /^(javascript|data|vbscript):/.test(value)) {
        found.push(`${el.tagName} ${name}=${attr.value}`);
      }
    }
    if (el.tagName === "SCRIPT" && !el.src) found.push("inline script: " + el.textContent);
    if (["IFRAME", "OBJECT", "EMBED", "BASE", "META", "FORM"].includes(el.tagName)
        && el.closest("body") && !el.matches("form[method=post], form[method=get], form[role]")) {
      found.push(el.outerHTML.slice(0, 80));
    }
  }
  return found;
}"""

# Recorded before any page script runs: CSP violations, and any code a payload managed to run.
_WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.effectiveDirective} blocked ${e.blockedURI} (${e.sample})`);
});
"""


def _messages(payload: str) -> str:
    return json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": payload}]},
            {"role": "user", "parts": [{"type": "text", "content": f"look: {payload}"}]},
            {
                "role": "assistant",
                "parts": [
                    {
                        "type": "tool_call",
                        "id": payload,
                        "name": payload,
                        "arguments": {"u": payload},
                    }
                ],
            },
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": payload, "response": payload}],
            },
            {"role": "user", "parts": [{"type": "image_url", "url": f"http://{EVIL}/part.png"}]},
        ]
    )


def _send_trace(url: str, root_name: str, t0: int) -> SimpleNamespace:
    """A trace with one span per payload, each from a service named by its payload."""
    root_spans = Spans(url, f"xss-out {root_name}", resource={"x": root_name})
    root = root_spans.span(
        root_name,
        start_ns=t0,
        duration_ms=3000,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "workflow.name": root_name,
            "session.id": root_name,
            "user.id": root_name,
        },
    )
    senders, children = [root_spans], {}
    for index, (label, payload) in enumerate(CORPUS.items()):
        spans = Spans(
            url,
            payload,
            resource={"deployment.environment": payload, payload: payload},
            scope=(payload, payload),
        )
        elsewhere = SpanContext(
            trace_id=int.from_bytes(os.urandom(16)),
            span_id=int.from_bytes(os.urandom(8)),
            is_remote=True,
            trace_flags=TraceFlags(1),
        )
        span = spans.span(
            payload,
            parent=root,
            start_ns=t0 + (10 + index * 100) * MS,
            duration_ms=80,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": payload,
                "gen_ai.agent.name": payload,
                "gen_ai.tool.name": payload,
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,
                "gen_ai.input.messages": _messages(payload),
                "gen_ai.output.messages": _messages(payload),
                "workflow.name": payload,
                "session.id": payload,
                "user.id": payload,
                "url.full": f"http://{EVIL}/attr",
                "note": payload,
                payload: payload,
            },
            events=((payload, {payload: payload, "href": f"http://{EVIL}/event"}),),
            links=(Link(elsewhere, {payload: payload}),),
            error=payload,
            exception=ValueError(payload),
            exception_attributes={"exception.type": payload, "exception.stacktrace": payload},
        )
        senders.append(spans)
        children[label] = hex_span_id(span)
    for spans in senders:
        spans.send()
    return SimpleNamespace(id=hex_trace_id(root), spans=children)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, free_port):
    """A server of its own: this module adds saved filters, history and an admin user."""
    directory = tmp_path_factory.mktemp("xss-outbound")
    server = MsgtraceServer.start(directory, free_port())
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "msgtrace"),
            *("createsuperuser", "--noinput", "--username", USERNAME, "--email", "x@example.com"),
        ],
        env={**server.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    t0 = now_ns(ago_s=120)
    a = _send_trace(server.url, CORPUS["script"], t0)
    b = _send_trace(server.url, CORPUS["script"], t0 + 5000 * MS)
    for trace in (a, b):
        server.wait_for_trace(trace.id, len(CORPUS) + 1)
    yield SimpleNamespace(server=server, url=server.url, a=a, b=b)
    server.stop()


class Guard:
    """Everything a page asks the network for, and everything that went wrong on it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.outbound: list[str] = []  # attempted: even one the CSP then blocks
        self.escaped: list[str] = []  # went out to the network (here: aborted by ``route``)
        self.problems: list[str] = []
        self.status = 200  # of the page last visited
        page.on("request", self._request)
        page.on("websocket", lambda socket: self._check_host(socket.url))
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("dialog", lambda dialog: (self.problems.append("dialog"), dialog.dismiss()))
        page.on(
            "console",
            lambda message: (
                message.type == "error" and self.problems.append(f"console: {message.text}")
            ),
        )

    def _check_host(self, url: str) -> None:
        if url.startswith(("data:", "about:", "blob:")):
            return
        if urlsplit(url).hostname not in LOOPBACK:
            self.outbound.append(url)

    def _request(self, request) -> None:
        self._check_host(request.url)

    def route(self, route) -> None:
        """Requests that reach the network: other hosts are recorded and aborted."""
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.escaped.append(route.request.url)
            route.abort()

    def visit(self, url: str, *, status: int | None = 200, html: bool = True):
        response = self.page.goto(url)
        self.status = response.status
        if status is None:
            assert response.status < 500, (url, response.status)
        else:
            assert response.status == status, (url, response.status)
        if html:
            assert "content-security-policy" in response.headers, url
        self.page.wait_for_load_state("networkidle")
        self.check(url)
        return response

    def check(self, where: str) -> None:
        page = self.page
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        page.wait_for_timeout(50)  # let any opened content try to load
        assert self.outbound == [], f"{where}: requests left loopback: {self.outbound}"
        assert page.evaluate("window.__xss") is None, where
        assert page.evaluate("window.__violations") == [], where
        # An error page's own status is logged as an error too: that one is expected.
        own = (
            f"console: Failed to load resource: the server responded with a status of {self.status}"
        )
        assert [p for p in self.problems if not p.startswith(own)] == [], where
        self.problems.clear()  # checked
        assert page.evaluate(_RUNNABLE) == [], where
        # Markup that would load from elsewhere (links to click are not loads).
        foreign = page.evaluate(
            """() => [...document.querySelectorAll(
                  '[src], [srcset], [poster], [data], form[action], link[href], base[href]')]
                .flatMap(el => ['src', 'srcset', 'poster', 'data', 'action', 'href']
                  .map(a => el.getAttribute(a)).filter(Boolean))
                .filter(v => /^\\s*(https?:)?\\/\\//i.test(v))"""
        )
        assert foreign == [], f"{where}: markup that loads from other hosts: {foreign}"


@pytest.fixture
def guard(context, page) -> Guard:
    context.add_init_script(_WATCH)
    guard = Guard(page)
    context.route("**/*", guard.route)
    return guard


def _sign_in(guard: Guard, base: str) -> None:
    guard.visit(f"{base}/login?next=/admin/")
    guard.page.locator("input[name=username]").fill(USERNAME)
    guard.page.locator("input[name=password]").fill(PASSWORD)
    guard.page.locator("form button[type=submit], form input[type=submit]").first.click()
    expect(guard.page).to_have_url(f"{base}/admin/")
    guard.check("admin index")


def test_dashboard_list_and_search_stay_on_loopback(guard, hostile_server, screenshot):
    base = hostile_server.url
    guard.visit(f"{base}/?window=all")
    expect(guard.page.locator("main")).to_contain_text(CORPUS["script"])
    screenshot(guard.page, "csp-dashboard")
    guard.visit(f"{base}/traces")
    expect(guard.page.locator("#results")).to_contain_text(CORPUS["script"])
    for payload in PAYLOADS:
        query = '"' + payload.replace("\\", "\\\\").replace('"', '\\"') + '"'
        guard.visit(f"{base}/traces?q={quote(query)}")
    guard.visit(f"{base}/traces?service={quote(CORPUS['img'])}")
    expect(guard.page.locator("#results tbody tr[data-nav-row]")).to_have_count(0)
    # The searches went into the history menu, which shows them back.
    guard.visit(f"{base}/traces")
    expect(guard.page.locator("#search-menus")).to_contain_text(CORPUS["iframe"])


@pytest.mark.parametrize(
    "template",
    [
        "/traces?sort={p}&since={p}&until={p}&min_duration={p}",
        "/traces?q={p}",
        "/traces/{p}",
        "/traces/compare?a={p}&b={p}",
        "/analytics?window=custom&since={p}&until={p}",
        "/analytics?sort_model={p}&q={p}",
        "/?window={p}",
        "/api/v1/traces?limit={p}&sort={p}",
    ],
)
def test_hostile_query_parameters_come_back_as_text(guard, hostile_server, template):
    # Pages quote a bad parameter back in their error message; it must stay text there.
    for payload in (CORPUS["handler"], CORPUS["img"], CORPUS["meta-refresh"], CORPUS["base"]):
        url = hostile_server.url + template.format(p=quote(payload, safe=""))
        guard.visit(url, status=None, html=not template.startswith("/api/"))


def test_trace_page_span_panels_and_tree_stay_on_loopback(guard, hostile_server, screenshot):
    base, trace = hostile_server.url, hostile_server.a
    guard.visit(f"{base}/traces/{trace.id}")
    expect(guard.page.locator(".span-row")).to_have_count(len(CORPUS) + 1)
    for payload in PAYLOADS:
        expect(guard.page.locator("#timeline-body")).to_contain_text(payload)
    for label, span_id in trace.spans.items():
        # A click on the row opens the span (msgtrace.js), by htmx.
        guard.page.locator(f".span-row[data-span='{span_id}'] .col-bar").click()
        expect(guard.page.locator("#panel .panel-title")).to_have_text(CORPUS[label])
        guard.check(f"span panel {label}")
    screenshot(guard.page, "csp-trace")
    guard.visit(f"{base}/traces/{trace.id}/spans/{trace.spans['markdown-image']}")
    expect(guard.page.locator("#panel")).to_contain_text(f"http://{EVIL}/part.png")
    guard.visit(f"{base}/traces/{trace.id}?view=tree&filter={quote(CORPUS['link'])}")


def test_compare_and_analytics_stay_on_loopback(guard, hostile_server, screenshot):
    base, a, b = hostile_server.url, hostile_server.a, hostile_server.b
    guard.visit(f"{base}/traces/compare?a={a.id}&b={b.id}")
    expect(guard.page.locator("main")).to_contain_text(CORPUS["meta-refresh"])
    guard.visit(f"{base}/analytics?window=24h")
    expect(guard.page.locator("main")).to_contain_text(CORPUS["css-url"])
    screenshot(guard.page, "csp-analytics")
    guard.visit(f"{base}/analytics?window=24h&q={quote('service:' + json.dumps(CORPUS['base']))}")


def test_saved_filters_with_hostile_names_stay_text(guard, hostile_server):
    base = hostile_server.url
    query = json.dumps(CORPUS["form"])  # a quoted phrase: finds spans named by it
    guard.visit(f"{base}/traces?q={quote(query)}")
    name = guard.page.locator("form[data-save-search] input[name=name]")
    for hostile in (CORPUS["handler"], CORPUS["svg"], CORPUS["object"], CORPUS["template"]):
        # guard.check opened every menu; msgtrace.js leaves one open: open "Saved" again.
        guard.page.locator("#search-menus details.menu").first.evaluate("m => m.open = true")
        name.fill(hostile)
        guard.page.locator("form[data-save-search] button").click()  # htmx swaps the menus
        expect(guard.page.locator("#search-menus")).to_contain_text(hostile)
        guard.check(f"saved-filter menu after saving {hostile}")
    guard.visit(f"{base}/traces")
    for hostile in (CORPUS["handler"], CORPUS["svg"], CORPUS["object"], CORPUS["template"]):
        expect(guard.page.locator("#search-menus")).to_contain_text(hostile)
    # A saved filter's link runs its query (rename forms, opened by guard.check, shut first).
    guard.page.evaluate("document.querySelectorAll('details.rename').forEach(d => d.open = false)")
    guard.page.locator("#search-menus a.menu-item").first.click()
    expect(guard.page.locator("#q")).to_have_value(query)
    guard.check("list from a saved filter")


def test_the_admin_works_under_the_policy_and_keeps_hostile_text_inert(
    guard, hostile_server, screenshot
):
    base, trace = hostile_server.url, hostile_server.a
    _sign_in(guard, base)
    pages = [
        "/admin/traces/trace/",
        f"/admin/traces/trace/?q={trace.id}",
        "/admin/traces/span/",
        f"/admin/traces/span/?trace={trace.id}",
        "/admin/search/savedfilter/",
        "/admin/search/searchhistory/",
    ]
    for path in pages:
        guard.visit(base + path)
        # The admin's own scripts loaded and ran under the policy.
        assert guard.page.evaluate("typeof django === 'object' && !!django.jQuery"), path
    guard.visit(f"{base}/admin/traces/trace/")
    expect(guard.page.locator("#result_list")).to_contain_text(CORPUS["script"])
    screenshot(guard.page, "csp-admin-traces")
    # The select-all box is the admin's JavaScript (actions.js) at work.
    guard.page.locator("#action-toggle").check()
    expect(guard.page.locator("input.action-select").first).to_be_checked()
    guard.page.locator("#result_list a", has_text=CORPUS["script"]).first.click()
    expect(guard.page.locator("#content")).to_contain_text(CORPUS["markdown-image"])
    guard.check("admin trace page")
    screenshot(guard.page, "csp-admin-trace")
    for label in ("img", "link", "iframe"):
        guard.visit(f"{base}/admin/traces/span/?q={trace.spans[label]}")
        guard.page.locator("#result_list tbody a").first.click()
        expect(guard.page.locator("#content")).to_contain_text(CORPUS[label])
        guard.check(f"admin span page {label}")
    guard.visit(f"{base}/admin/search/savedfilter/")
    links = guard.page.locator("#result_list tbody a")
    if links.count():
        links.first.click()
        guard.check("admin saved filter page")


def test_json_api_answers_json_not_html(guard, hostile_server):
    base, trace = hostile_server.url, hostile_server.a
    for path, shown in (
        (f"/api/v1/traces?q={quote(json.dumps(CORPUS['script']))}", CORPUS["script"]),
        (f"/api/v1/traces/{trace.id}", CORPUS["iframe"]),
        (f"/api/v1/traces/{trace.id}/tree", CORPUS["meta-refresh"]),
        ("/api/v1/analytics/breakdown?by=span", CORPUS["script"]),
    ):
        response = guard.visit(base + path, html=False)
        assert response.headers["content-type"] == "application/json", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        # Shown as JSON text: the payload is there, escaped for JSON, not parsed as HTML.
        assert json.dumps(shown)[1:-1] in guard.page.locator("body").inner_text(), path


def test_the_policy_itself_stops_markup_that_got_past_escaping(guard, hostile_server, csp_refusals):
    """Should escaping ever fail, the CSP is the second wall: inject markup and watch."""
    guard.visit(f"{hostile_server.url}/traces/{hostile_server.a.id}")
    guard.page.evaluate(
        """(evil) => document.querySelector("main").insertAdjacentHTML("beforeend",
          `<img src="http://${evil}/injected.png"><img src=x onerror="window.__xss=1">
           <iframe src="http://${evil}/frame"></iframe><object data="http://${evil}/o"></object>`)""",
        EVIL,
    )
    guard.page.wait_for_timeout(300)
    assert guard.page.evaluate("window.__xss") is None
    assert guard.escaped == []  # the browser asked (guard.outbound); the policy said no
    blocked = " ".join(guard.page.evaluate("window.__violations"))
    for directive in ("img-src", "script-src-attr", "frame-src", "object-src"):
        assert directive in blocked, blocked
    csp_refusals.clear()  # provoked on purpose

// msgtrace: the little JavaScript the pages use. Everything works without it (plain links
// and forms); with it: toasts, copy buttons, loading and error states, keyboard moves,
// collapsible span subtrees and bulk selection. No framework, no build.
(function () {
  "use strict";

  // --- Toasts ------------------------------------------------------------------------
  function toast(message, level) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var item = document.createElement("div");
    item.className = "toast toast-" + (level || "info");
    item.setAttribute("data-toast", "");
    item.textContent = message; // text, never HTML
    box.appendChild(item);
    dismissLater(item);
  }
  function dismissLater(item) {
    // Alert toasts (data-sticky) stay until dismissed: a firing rule must not slip by.
    if (item.hasAttribute("data-timed") || item.hasAttribute("data-sticky")) return;
    item.setAttribute("data-timed", "");
    setTimeout(function () {
      item.classList.add("is-leaving");
      setTimeout(function () { item.remove(); }, 350);
    }, 3500);
  }
  window.msgtraceToast = toast;
  document.addEventListener("msgtrace:toast", function (event) {
    var detail = event.detail || {};
    toast(detail.message || "", detail.level);
  });

  // --- Copy buttons ------------------------------------------------------------------
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    return Promise.resolve();
  }

  // --- Bulk selection on the trace list ------------------------------------------------
  function selectedIds() {
    return Array.prototype.map.call(
      document.querySelectorAll('input[name="ids"]:checked'), function (box) { return box.value; });
  }
  function updateSelection() {
    var ids = selectedIds();
    var count = document.querySelector("[data-selected-count]");
    if (!count) return;
    count.textContent = ids.length ? ids.length + " selected" : "No traces selected";
    var del = document.querySelector("[data-bulk-delete]");
    var compare = document.querySelector("[data-compare]");
    if (del) del.disabled = ids.length === 0;
    if (compare) compare.disabled = ids.length !== 2;
    var all = document.querySelector("[data-check-all]");
    var boxes = document.querySelectorAll('input[name="ids"]');
    if (all) all.checked = boxes.length > 0 && ids.length === boxes.length;
  }

  // --- Span subtrees -------------------------------------------------------------------
  var collapsed = new Set();
  function applyCollapse() {
    // Rows come in tree order, so a parent is decided before its children.
    var hidden = new Set();
    document.querySelectorAll(".span-row").forEach(function (row) {
      var parent = row.dataset.parent;
      var hide = parent && (collapsed.has(parent) || hidden.has(parent));
      row.hidden = !!hide;
      if (hide) hidden.add(row.dataset.span);
      var caret = row.querySelector("[data-toggle]");
      if (caret) {
        var open = !collapsed.has(row.dataset.span);
        caret.setAttribute("aria-expanded", open ? "true" : "false");
        caret.title = open ? "Collapse this subtree" : "Expand this subtree";
      }
    });
  }

  // --- Clicks --------------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var target = event.target;
    var dismiss = target.closest("[data-toast-close]");
    if (dismiss) {
      dismiss.closest("[data-toast]").remove();
      return;
    }
    var copy = target.closest("[data-copy], [data-copy-target]");
    if (copy) {
      var text = copy.dataset.copy;
      if (copy.dataset.copyTarget) {
        var source = document.getElementById(copy.dataset.copyTarget);
        text = source ? source.textContent : "";
      }
      copyText(text).then(function () { toast("Copied to the clipboard", "success"); },
        function () { toast("Could not copy: the browser refused", "error"); });
      return;
    }
    var toggle = target.closest("[data-toggle]");
    if (toggle) {
      event.preventDefault();
      event.stopPropagation();
      var id = toggle.closest(".span-row").dataset.span;
      if (collapsed.has(id)) collapsed.delete(id); else collapsed.add(id);
      applyCollapse();
      return;
    }
    if (target.closest("[data-expand-all]")) { collapsed.clear(); applyCollapse(); return; }
    if (target.closest("[data-collapse-all]")) {
      document.querySelectorAll(".span-row").forEach(function (row) {
        if (row.dataset.depth === "0" && row.querySelector("[data-toggle]")) collapsed.add(row.dataset.span);
      });
      applyCollapse();
      return;
    }
    var example = target.closest("[data-example]");
    if (example) {
      var q = document.getElementById("q");
      q.value = example.dataset.example;
      example.closest("details").removeAttribute("open");
      q.form.requestSubmit();
      return;
    }
    if (target.closest("[data-close-panel]")) {
      event.preventDefault();
      closePanel(target.closest("[data-close-panel]").getAttribute("href"));
      return;
    }
    if (target.closest("[data-retry]")) {
      var button = target.closest("[data-retry]");
      var where = document.querySelector(button.dataset.target);
      htmx.ajax("GET", button.dataset.retry, { target: where, swap: "innerHTML" });
      return;
    }
    if (target.closest("[data-compare]")) {
      // The earlier trace is the baseline (A), whatever order the list is sorted in.
      var boxes = Array.prototype.slice.call(document.querySelectorAll('input[name="ids"]:checked'));
      if (boxes.length === 2) {
        boxes.sort(function (x, y) { return Number(x.dataset.start) - Number(y.dataset.start); });
        window.location.href = target.closest("[data-compare]").dataset.compare +
          "?a=" + encodeURIComponent(boxes[0].value) + "&b=" + encodeURIComponent(boxes[1].value);
      }
      return;
    }
    // A click anywhere on a span row opens it, as a click on its name does.
    var row = target.closest(".span-row");
    if (row && !target.closest("a, button")) {
      var link = row.querySelector("[data-nav-link]");
      if (link) link.click();
    }
  });

  // Drop-down menus (<details class="menu">, the help panel): one open at a time, and a
  // click elsewhere closes them, as menus do.
  var MENUS = "details.menu, details.help";
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!opened.matches || !opened.matches(MENUS) || !opened.open) return;
    document.querySelectorAll(MENUS).forEach(function (other) {
      if (other !== opened && other.open && !other.contains(opened)) other.removeAttribute("open");
    });
  }, true);
  document.addEventListener("click", function (event) {
    document.querySelectorAll(MENUS).forEach(function (menu) {
      if (menu.open && !menu.contains(event.target)) menu.removeAttribute("open");
    });
  });

  // Compare: hovering a span shows its partner in the other trace.
  function pairHover(event, on) {
    var item = event.target.closest && event.target.closest("[data-pair]");
    if (!item || item.dataset.pair === "") return;
    document.querySelectorAll('[data-pair="' + item.dataset.pair + '"]').forEach(function (el) {
      el.classList.toggle("is-paired", on);
    });
  }
  document.addEventListener("mouseover", function (event) { pairHover(event, true); });
  document.addEventListener("mouseout", function (event) { pairHover(event, false); });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-check-all]")) {
      document.querySelectorAll('input[name="ids"]').forEach(function (box) {
        box.checked = event.target.checked;
      });
    }
    if (event.target.matches('input[name="ids"], [data-check-all]')) updateSelection();
  });

  function closePanel(url) {
    var panel = document.getElementById("panel");
    if (!panel) return;
    panel.innerHTML = '<div class="panel-empty"><p>Select a span to see its attributes, events and messages.</p></div>';
    document.querySelectorAll(".span-row.is-selected").forEach(function (row) { row.classList.remove("is-selected"); });
    if (url) history.pushState({}, "", url);
  }

  function markSelected() {
    var panel = document.querySelector("#panel [data-span-id]");
    var id = panel ? panel.dataset.spanId : null;
    document.querySelectorAll(".span-row").forEach(function (row) {
      row.classList.toggle("is-selected", row.dataset.span === id);
    });
  }

  // --- Keyboard ------------------------------------------------------------------------
  function navRows() {
    return Array.prototype.filter.call(document.querySelectorAll("[data-nav-row]"), function (row) {
      return !row.hidden && row.offsetParent !== null;
    });
  }
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    var typing = tag === "input" || tag === "textarea" || tag === "select" || event.target.isContentEditable;
    if (event.key === "Escape") {
      if (typing) { event.target.blur(); return; }
      var close = document.querySelector("[data-close-panel]");
      if (close) closePanel(close.getAttribute("href"));
      return;
    }
    if (typing || event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.key === "/") {
      var search = document.querySelector("[data-search-focus]") || document.getElementById("span-filter");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
      return;
    }
    if (event.key === "j" || event.key === "k") {
      var rows = navRows();
      if (!rows.length) return;
      var current = rows.findIndex(function (row) { return row.classList.contains("is-current"); });
      if (current < 0) current = rows.findIndex(function (row) { return row.classList.contains("is-selected"); });
      var next = event.key === "j" ? Math.min(current + 1, rows.length - 1) : Math.max(current - 1, 0);
      if (current < 0) next = 0;
      rows.forEach(function (row) { row.classList.remove("is-current"); });
      rows[next].classList.add("is-current");
      rows[next].scrollIntoView({ block: "nearest" });
      event.preventDefault();
      return;
    }
    if (event.key === "Enter") {
      var active = document.querySelector("[data-nav-row].is-current [data-nav-link]");
      if (active) { event.preventDefault(); active.click(); }
    }
  });

  // --- htmx: loading, errors, after swaps ------------------------------------------------
  document.addEventListener("htmx:beforeRequest", function (event) {
    var target = event.detail.target;
    if (target) target.classList.add("is-loading");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var target = event.detail.target;
    if (target) target.classList.remove("is-loading");
  });
  function showFailure(event, text) {
    var detail = event.detail;
    var verb = (detail.requestConfig && detail.requestConfig.verb) || "get";
    if (verb !== "get" || !detail.target || !detail.target.id) {
      toast(text, "error");
      return;
    }
    var path = detail.pathInfo && detail.pathInfo.finalRequestPath;
    var box = document.createElement("div");
    box.className = "error-state";
    var message = document.createElement("p");
    message.textContent = text;
    var retry = document.createElement("button");
    retry.type = "button";
    retry.className = "btn";
    retry.textContent = "Retry";
    retry.dataset.retry = path || window.location.href;
    retry.dataset.target = "#" + detail.target.id;
    box.appendChild(message);
    box.appendChild(retry);
    detail.target.replaceChildren(box);
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : "";
    showFailure(event, "The server answered with an error (" + status + ").");
  });
  document.addEventListener("htmx:sendError", function (event) {
    showFailure(event, "Could not reach msgtrace. Is the server running?");
  });
  document.addEventListener("htmx:afterSettle", function () {
    var shown = document.querySelector("[data-shown-count]");
    if (shown) shown.textContent = document.querySelectorAll(".span-row").length;
    applyCollapse();
    markSelected();
    updateSelection();
    localTimes(document);
    document.querySelectorAll("input[data-fields]").forEach(setUpAutocomplete);
  });
  document.addEventListener("msgtrace:refresh", function () { updateSelection(); });
  // "Save current search" saves what is in the search box now, not when the page loaded.
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.elt.closest && event.detail.elt.closest("[data-save-search]")) {
      var q = document.getElementById("q");
      if (q) event.detail.parameters.q = q.value;
    }
  });

  // --- Live updates (the socket of base.html's #live; traces/consumers.py PageConsumer) ----
  // htmx's ws extension swaps the fragments and reconnects with full-jitter backoff after an
  // abnormal close; here: the indicator, the page's current filters, re-sync after a
  // reconnect, the list's pause switch, and tidying after each message.
  var RETRIED = [1006, 1011, 1012, 1013]; // the close codes the extension retries itself
  var live = { socket: null, opens: 0, failures: 0, paused: false, held: 0 };
  function liveState(state, title) {
    var box = document.getElementById("live");
    if (!box) return;
    box.dataset.liveState = state;
    box.title = "Live updates: " + title;
    box.querySelector("[data-live-label]").textContent = state;
  }
  function sendParams(resync) {
    if (!live.socket) return;
    live.socket.send(JSON.stringify({ params: window.location.search.slice(1), resync: !!resync }));
  }
  function refetch(selector) {
    var target = document.querySelector(selector);
    if (target) htmx.ajax("GET", window.location.pathname + window.location.search, { target: target, swap: "innerHTML" });
  }
  function showNotice(text) {
    var notice = document.getElementById("live-notice");
    if (!notice) return;
    notice.textContent = text;
    notice.hidden = !text;
  }
  function showLatest() {
    live.held = 0;
    showNotice("");
    refetch("#results");
    sendParams(false); // the server's own count of missed traces starts again
  }
  document.addEventListener("htmx:wsConnecting", function () {
    if (live.opens) liveState(live.failures >= 3 ? "offline" : "reconnecting", "reconnecting…");
  });
  document.addEventListener("htmx:wsOpen", function (event) {
    live.socket = event.detail.socketWrapper;
    live.failures = 0;
    liveState("live", "on");
    var again = live.opens++ > 0;
    // What happened while the socket was down: the list and dashboard fetch their fragment;
    // a trace page asks the socket (its header and timeline).
    sendParams(again && !document.getElementById("results"));
    if (again && document.getElementById("results")) {
      if (live.paused) showNotice("Reconnected — show latest"); else refetch("#results");
    }
  });
  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail.event.code;
    live.failures++;
    if (code >= 4000) { liveState("offline", "refused by the server"); return; }
    var offline = live.failures >= 3 || navigator.onLine === false;
    liveState(offline ? "offline" : "reconnecting", offline ? "offline, retrying" : "reconnecting…");
    if (RETRIED.indexOf(code) < 0 && event.target.isConnected) {
      // A clean close (a server restart): the extension gives up on those; retry the same way.
      var wait = 1000 * Math.pow(2, Math.min(live.failures, 6)) * Math.random();
      var socket = event.detail.socketWrapper;
      setTimeout(function () { if (event.target.isConnected) socket.reconnect(); }, wait);
    }
  });
  window.addEventListener("offline", function () { if (document.getElementById("live")) liveState("offline", "offline"); });
  ["htmx:pushedIntoHistory", "htmx:replacedInHistory", "htmx:historyRestore", "popstate"].forEach(function (name) {
    window.addEventListener(name, function () { sendParams(false); });
  });
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "trace-rows") return;
    var rows = event.detail.fragment.querySelectorAll("tr");
    if (live.paused) {
      event.detail.shouldSwap = false;
      live.held += rows.length;
      showNotice(live.held + " new trace" + (live.held === 1 ? "" : "s") + " — show");
      return;
    }
    target.querySelectorAll("tr:not([data-nav-row])").forEach(function (row) { row.remove(); }); // "No traces yet"
    rows.forEach(function (row) {
      var old = document.getElementById(row.id);
      if (old) old.replaceWith(row); // already shown: update it where it is
    });
  });
  function rescaleBars() {
    // Live rows arrive without the page's scale: bars are relative to the longest shown.
    var rows = document.querySelectorAll("#trace-rows tr[data-duration]");
    var longest = 0;
    rows.forEach(function (row) { longest = Math.max(longest, Number(row.dataset.duration)); });
    rows.forEach(function (row) {
      var rect = row.querySelector(".dur-bar rect");
      if (rect) rect.setAttribute("width", (longest ? Number(row.dataset.duration) / longest * 100 : 0).toFixed(1) + "%");
    });
  }
  document.addEventListener("htmx:wsAfterMessage", function () {
    rescaleBars();
    document.querySelectorAll("#trace-rows tr.is-new:not([data-fading])").forEach(function (row) {
      row.setAttribute("data-fading", "");
      setTimeout(function () { row.classList.remove("is-new"); }, 4000);
    });
    var toasts = document.querySelectorAll("#toasts [data-toast]");
    for (var i = 0; i < toasts.length - 4; i++) toasts[i].remove(); // a few at a time
    toasts.forEach(dismissLater);
    applyCollapse();
    markSelected();
    updateSelection();
    localTimes(document);
  });
  document.addEventListener("change", function (event) {
    if (!event.target.matches("[data-live-pause]")) return;
    live.paused = event.target.checked;
    if (!live.paused && live.held) showLatest();
  });
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-live-show]")) showLatest(); // paused or not, as it was
  });

  // --- Field-name autocomplete in the search box ------------------------------------------
  function setUpAutocomplete(input) {
    if (input.hasAttribute("data-completing")) return; // a form swapped in again keeps it
    input.setAttribute("data-completing", "");
    var list = document.getElementById(input.getAttribute("aria-controls"));
    var fields = (input.dataset.fields || "").split(" ").filter(Boolean);
    var active = -1;
    function token() {
      var upto = input.value.slice(0, input.selectionStart);
      var match = /(^|[\s(])-?([A-Za-z_.]*)$/.exec(upto);
      return match ? { text: match[2], start: upto.length - match[2].length } : null;
    }
    function hide() { list.hidden = true; list.replaceChildren(); active = -1; }
    function choose(name) {
      var current = token();
      if (!current) return hide();
      var suffix = name.endsWith(".") ? "" : ":";
      var before = input.value.slice(0, current.start);
      var after = input.value.slice(input.selectionStart);
      input.value = before + name + suffix + after;
      var caret = (before + name + suffix).length;
      input.setSelectionRange(caret, caret);
      hide();
      input.focus();
    }
    function show() {
      var current = token();
      if (!current || !current.text || current.text.indexOf(":") >= 0) return hide();
      var prefix = current.text.toLowerCase();
      var matches = fields.filter(function (f) { return f.startsWith(prefix) && f !== prefix; }).slice(0, 8);
      if (!matches.length) return hide();
      list.replaceChildren();
      matches.forEach(function (name, index) {
        var item = document.createElement("li");
        item.setAttribute("role", "option");
        item.textContent = name;
        item.addEventListener("mousedown", function (event) { event.preventDefault(); choose(name); });
        list.appendChild(item);
      });
      active = -1;
      list.hidden = false;
    }
    function highlight(step) {
      var items = list.querySelectorAll("li");
      if (!items.length) return;
      active = (active + step + items.length) % items.length;
      items.forEach(function (item, index) { item.setAttribute("aria-selected", index === active ? "true" : "false"); });
    }
    input.addEventListener("input", show);
    input.addEventListener("blur", hide);
    input.addEventListener("keydown", function (event) {
      if (list.hidden) return;
      if (event.key === "ArrowDown") { event.preventDefault(); highlight(1); }
      else if (event.key === "ArrowUp") { event.preventDefault(); highlight(-1); }
      else if ((event.key === "Enter" || event.key === "Tab") && active >= 0) {
        event.preventDefault();
        event.stopPropagation();
        choose(list.querySelectorAll("li")[active].textContent);
      } else if (event.key === "Tab") {
        event.preventDefault();
        choose(list.querySelector("li").textContent);
      } else if (event.key === "Escape") { event.stopPropagation(); hide(); }
    });
  }

  // --- Times in the reader's time zone --------------------------------------------------
  var pad = function (n) { return String(n).padStart(2, "0"); };
  function localTimes(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.dataset.local = "";
      el.title = el.getAttribute("datetime").replace("T", " ").replace("Z", " UTC");
      if (el.hasAttribute("data-relative")) {
        var seconds = Math.round((Date.now() - when) / 1000);
        var text = seconds < 60 ? "just now" : seconds < 3600 ? Math.floor(seconds / 60) + " min ago"
          : seconds < 86400 ? Math.floor(seconds / 3600) + " h ago" : Math.floor(seconds / 86400) + " d ago";
        el.textContent = text;
      } else {
        el.textContent = when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate()) +
          " " + pad(when.getHours()) + ":" + pad(when.getMinutes()) + ":" + pad(when.getSeconds());
        var label = el.nextElementSibling;
        if (label && label.hasAttribute("data-tz")) label.textContent = "local time";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-toast]").forEach(dismissLater);
    document.querySelectorAll("input[data-fields]").forEach(setUpAutocomplete);
    localTimes(document);
    updateSelection();
    var selected = document.querySelector(".span-row.is-selected");
    if (selected) selected.scrollIntoView({ block: "nearest" });
  });
})();

// Export menus: a download leaves the page as it is, so close the menu it came from.
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("details.menu a[download]");
  if (link) link.closest("details").removeAttribute("open");
});

// Analytics: a click anywhere on a breakdown row opens the traces it stands for, as a
// click on its name does; "Custom" opens the from/to fields (they stay out of the query
// string until then, since the server refuses since/until without window=custom).
document.addEventListener("click", function (event) {
  var target = event.target;
  if (!target.closest) return;
  var row = target.closest("tr[data-row-link]");
  if (row && !target.closest("a, button")) {
    var link = row.querySelector("[data-nav-link]");
    if (link) link.click();
    return;
  }
  var toggle = target.closest("[data-custom-toggle]");
  if (!toggle) return;
  event.preventDefault();
  var fields = document.getElementById("custom-window");
  if (!fields) return;
  fields.hidden = false;
  fields.querySelectorAll("input").forEach(function (input) { input.disabled = false; });
  var window_ = fields.querySelector("[data-window-field]");
  if (window_) window_.value = "custom";
  var since = fields.querySelector("input[name=since]");
  if (since) since.focus();
});

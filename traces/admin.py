"""The Django admin for traces and spans: read-only views of what ingest stored.

Built for a table of a million spans: no page counts a whole table (a capped count, no
facets), filters offer bounded choices, searches and sorts go through indexes, and a
trace's spans show as its first few with a link to the rest. Deleting goes through the
same services as the UI (spans with their trace, live pages told), in short batches.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import CharField, F, Func, QuerySet, Value
from django.db.models.lookups import In
from django.forms.models import BaseInlineFormSet
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from search.compiler import compile_query
from search.parser import QueryError
from traces import alerting, notify
from traces.keys import api_key_issue, api_keys_revoke, keyring
from traces.models import (
    AlertEvent,
    AlertRule,
    ApiKey,
    ModelPrice,
    Span,
    Trace,
    is_span_id,
    is_trace_id,
)
from traces.purge import traces_purge
from traces.services import traces_delete

# A changelist counts matching rows only up to this; beyond it, it says "more than".
COUNT_CAP = 10_000
# The trace page shows this many spans inline (in start order), then links to the rest.
SPANS_SHOWN = 50
# As the UI's bulk delete: more than this at once is msgtrace purge's job.
MAX_SELECTED = 1000
# Filters list at most this many services.
MAX_SERVICES = 50
# Span columns of a few KB each that lists and inlines never show.
_HEAVY = ("attributes", "events", "links", "resource_attributes", "scope")


class CappedPaginator(Paginator):
    """Counts at most ``COUNT_CAP`` rows: the admin pages a table it never counts in full.

    Django's changelist counts the filtered rows for its page links; on a million spans
    that is a scan per page view. Past the cap, pages beyond it are not offered and the
    count reads "more than" (templates/admin/traces/).
    """

    cap = COUNT_CAP
    capped = False

    @cached_property
    def count(self) -> int:
        # A queryset from SpanChangeList comes with its rows already counted to the cap.
        counted = getattr(self.object_list, "counted_to_cap", None)
        if counted is None:
            # Unordered: an ORDER BY inside the counted subquery makes SQLite read whole
            # rows in that order (22 s for a span type none has), not an index (0.1 s).
            counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)


class SpanChangeList(ChangeList):
    """On SQLite, a filter that few spans match is answered from an index, not the table.

    Asked for the newest spans of a type no span has, SQLite walks all million rows in
    primary-key order (4 s, more from a cold disk): without statistics it cannot know the
    matches are few. So the matching ids are read first, unordered, which the span_search
    index serves without touching the rows (SQLite's index entries carry the row id), and
    only up to the count cap. Under the cap, the list is those ids, and a page of them is
    fetched by key; over it, matches are common and the walk in key order finds a page at
    once. Either way the paginator is told the count. PostgreSQL plans from statistics,
    and its index entries do not hold the id (reading 10,000 ids cost 0.4 s there), so it
    gets the plain query.
    """

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        if connection.vendor != "sqlite" or not queryset.query.where:
            return queryset
        cap = CappedPaginator.cap
        ids = list(queryset.order_by().values_list("pk", flat=True)[: cap + 1])
        if len(ids) <= cap:
            queryset = queryset.model.objects.filter(pk__in=ids).order_by("-pk").defer(*_HEAVY)
        queryset.counted_to_cap = len(ids)
        return queryset


def _ns_datetime(ns: int) -> str:
    if not ns:
        return "-"
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def _duration(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:,.1f} ms" if ms < 1000 else f"{ms / 1000:,.2f} s"


def _services() -> list[tuple[str, str]]:
    """Service names, from the trace table's (service, start) index: bounded, cheap."""
    names = (
        Trace.objects.exclude(service_name="")
        .order_by("service_name")
        .values_list("service_name", flat=True)
        .distinct()[:MAX_SERVICES]
    )
    return [(name, name) for name in names]


# --- filters --------------------------------------------------------------------------------


class TraceServiceFilter(admin.SimpleListFilter):
    title = "service"
    parameter_name = "service"

    def lookups(self, request, model_admin):
        return _services()

    def queryset(self, request, queryset):
        return queryset.filter(service_name=self.value()) if self.value() else queryset


class _NotSeekable(Func):
    """A column SQLite may scan but not seek by (``+col``); the column itself elsewhere.

    Seeking spans trace by trace and then sorting them all by key cost 0.26 s for a
    common service; scanning in key order against the list of its traces stops after a
    page (65 ms), and SpanChangeList handles the rare ones through an index.
    """

    template = "%(expressions)s"
    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="+%(expressions)s", **extra_context)


class SpanServiceFilter(TraceServiceFilter):
    """Spans of the traces of a service: the trace table's service index finds them.

    A span's own ``service_name`` is in no index: filtering on it reads every span row.
    """

    title = "trace service"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        traces = Trace.objects.filter(service_name=self.value()).values("pk")
        return queryset.filter(In(_NotSeekable(F("trace_id")), traces))


class HasErrorsFilter(admin.SimpleListFilter):
    title = "errors"
    parameter_name = "errors"

    def lookups(self, request, model_admin):
        return [("yes", "With errors"), ("no", "Without errors")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.with_errors()
        if self.value() == "no":
            return queryset.filter(error_count=0)
        return queryset


_RECENT = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}  # fmt: skip
_OLDER = {"older-7d": timedelta(days=7), "older-30d": timedelta(days=30),
          "older-90d": timedelta(days=90)}  # fmt: skip


class StartedFilter(admin.SimpleListFilter):
    """Start-time ranges on ``start_ns`` (indexed), in place of a date hierarchy.

    ``date_hierarchy`` wants a DateTimeField; the only one, ``first_seen``, is when msgtrace
    first received a span of the trace (an import or a late exporter makes it differ from
    the start), has no index, and its drill-down groups every row through a date function.
    """

    title = "started"
    parameter_name = "started"

    def lookups(self, request, model_admin):
        return [
            ("1h", "Last hour"),
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("older-7d", "More than 7 days ago"),
            ("older-30d", "More than 30 days ago"),
            ("older-90d", "More than 90 days ago"),
        ]

    def queryset(self, request, queryset):
        now = datetime.now(UTC)
        if self.value() in _RECENT:
            return queryset.started_between(since=now - _RECENT[self.value()])
        if self.value() in _OLDER:
            return queryset.started_between(until=now - _OLDER[self.value()])
        return queryset


# What ingest puts in Span.span_type (ingest.conventions.SPAN_TYPE_VALUES): a fixed list,
# since listing the distinct values stored would read every span.
SPAN_TYPES = ("llm", "tool", "agent", "retriever", "embedding", "reranker", "chain",
              "guardrail", "evaluator", "workflow", "task", "flow", "module")  # fmt: skip


class SpanTypeFilter(admin.SimpleListFilter):
    title = "span type"
    parameter_name = "span_type"

    def lookups(self, request, model_admin):
        return [*((name, name) for name in SPAN_TYPES), ("-", "(none)")]

    def queryset(self, request, queryset):
        if self.value() == "-":
            return queryset.filter(span_type="")
        return queryset.filter(span_type=self.value()) if self.value() else queryset


class SpanTraceFilter(admin.SimpleListFilter):
    """``?trace=<id>``: the spans of one trace (the trace page links here). Shown only when set."""

    title = "trace"
    parameter_name = "trace"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request, queryset):
        return queryset.filter(trace_id=self.value().lower()) if self.value() else queryset


# --- traces ---------------------------------------------------------------------------------


class FirstSpans(BaseInlineFormSet):
    """The trace's first ``SPANS_SHOWN`` spans in start order, without their JSON columns."""

    def get_queryset(self):
        if not hasattr(self, "_first_spans"):
            spans = super().get_queryset().in_tree_order().defer(*_HEAVY)
            # The offset from the trace's start, without a query per span for the trace.
            spans = spans.annotate(offset_ns=F("start_ns") - Value(self.instance.start_ns))
            self._first_spans = spans[:SPANS_SHOWN]
        return self._first_spans


class SpanInline(admin.TabularInline):
    model = Span
    formset = FirstSpans
    fields = ("name", "span_type", "offset", "duration", "is_error", "model", "total_tokens")
    readonly_fields = fields
    show_change_link = True
    can_delete = False
    extra = 0
    verbose_name_plural = f"spans (the first {SPANS_SHOWN}, in start order)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="start")
    def offset(self, span):
        return f"+{_duration(span.offset_ns)}"

    @admin.display(description="duration")
    def duration(self, span):
        return _duration(span.duration_ns)


_TRACE_SHOWN = ("trace_id", "ui_link", "workflow_name", "root_span_name", "service_name",
                "started", "ended", "duration", "spans", "error_count", "input_tokens",
                "output_tokens", "total_tokens", "cost", "model_names", "session_id",
                "user_id", "first_seen", "last_updated")  # fmt: skip
_TRACE_HIDDEN = {"start_ns", "end_ns", "duration_ns", "span_count"}  # shown in their own words


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ("started", "workflow_name", "service_name", "duration", "span_count",
                    "error_count", "total_tokens", "cost", "trace_id")  # fmt: skip
    list_display_links = ("started", "workflow_name")
    # Only what an index sorts; another column would sort every trace for one page.
    sortable_by = ("started", "duration")
    ordering = ("-start_ns",)
    list_filter = (TraceServiceFilter, HasErrorsFilter, StartedFilter)
    search_fields = ("^workflow_name", "^root_span_name")
    search_help_text = "A trace id (exact), or the start of a workflow or root span name."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    # Model fields this page does not list by name still show, at the end.
    fields = (*_TRACE_SHOWN, *(f.name for f in Trace._meta.fields
                              if f.name not in {*_TRACE_SHOWN, *_TRACE_HIDDEN}))  # fmt: skip
    readonly_fields = fields
    inlines = (SpanInline,)
    actions = ("delete_selected",)

    def has_add_permission(self, request):
        return False  # traces come from ingest

    def has_change_permission(self, request, obj=None):
        return False  # a summary of its spans: editing it would only make it wrong

    def view_on_site(self, obj):
        return reverse("traces:detail", args=[obj.trace_id])

    def get_search_results(self, request, queryset, search_term):
        # A trace id is the primary key, looked up exactly; Django's "=trace_id" would be a
        # case-insensitive comparison that no index serves.
        term = search_term.strip().lower()
        if is_trace_id(term):
            return queryset.filter(pk=term), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="started", ordering="start_ns")
    def started(self, trace):
        return _ns_datetime(trace.start_ns)

    @admin.display(description="ended")
    def ended(self, trace):
        return _ns_datetime(trace.end_ns)

    @admin.display(description="duration", ordering="duration_ns")
    def duration(self, trace):
        return _duration(trace.duration_ns)

    @admin.display(description="spans")
    def spans(self, trace):
        url = reverse("admin:traces_span_changelist") + f"?trace={trace.trace_id}"
        return format_html('{} — <a href="{}">list all in the admin</a>', trace.span_count, url)

    @admin.display(description="in msgtrace")
    def ui_link(self, trace):
        url = reverse("traces:detail", args=[trace.trace_id])
        return format_html('<a href="{}">open the trace page</a>', url)

    # Deleting: spans go with their trace, live pages are told, in short transactions.

    def get_deleted_objects(self, objs, request):
        """A bounded summary: Django's own lists (and permission-checks) every span."""
        if isinstance(objs, QuerySet):  # the delete action's selection
            totals = objs.totals()
            count, spans, shown = totals["traces"], totals["spans"], list(objs[:20])
        else:  # one trace, from its page
            shown = list(objs)
            count, spans = len(shown), sum(trace.span_count for trace in shown)
        listed = [f"{trace} ({trace.span_count} spans)" for trace in shown[:20]]
        if count > len(listed):
            listed.append(f"and {count - len(listed):,} more traces")
        perms_needed = set() if self.has_delete_permission(request) else {"traces"}
        return listed, {"traces": count, "spans": spans}, perms_needed, []

    def delete_model(self, request, obj):
        traces_delete(trace_ids=[obj.trace_id])

    def delete_queryset(self, request, queryset):
        traces_purge(traces=queryset)

    @admin.action(permissions=["delete"], description="Delete selected traces and their spans")
    def delete_selected(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[: MAX_SELECTED + 1])
        if len(ids) > MAX_SELECTED:
            self.message_user(
                request,
                f"Select at most {MAX_SELECTED:,} traces to delete here; for more, use "
                f"msgtrace purge --query (docs/operations.md).",
                messages.ERROR,
            )
            return None
        # Django's confirmation page and flow, on a bounded selection.
        return admin_actions.delete_selected(self, request, Trace.objects.filter(pk__in=ids))


# --- spans ----------------------------------------------------------------------------------


_SPAN_SHOWN = ("span_id", "trace_link", "ui_link", "parent_span_id", "name", "kind",
               "span_type", "started", "ended", "duration", "status_code", "status_message",
               "is_error", "service_name", "model", "provider", "operation", "workflow_name",
               "module_name", "session_id", "user_id", "input_tokens", "output_tokens",
               "total_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
               "cost", "currency", "attributes", "events", "links", "resource_attributes",
               "scope")  # fmt: skip
_SPAN_HIDDEN = {"trace", "start_ns", "end_ns", "duration_ns"}


@admin.register(Span)
class SpanAdmin(admin.ModelAdmin):
    list_display = ("name", "span_id", "trace_link", "span_type", "service_name", "model",
                    "duration", "is_error", "started")  # fmt: skip
    # Newest first by primary key, the one order an index gives a million spans for free.
    ordering = ("-pk",)
    sortable_by = ()
    list_filter = (SpanTypeFilter, "is_error", SpanServiceFilter, SpanTraceFilter)
    search_fields = ("span_id",)  # handled below; declared so the search box shows
    search_help_text = "A span id or a trace id (exact)."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    fields = (*_SPAN_SHOWN, *(f.name for f in Span._meta.fields
                              if f.name not in {*_SPAN_SHOWN, *_SPAN_HIDDEN}))  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a span alone would leave its trace's summary wrong: delete the trace

    def view_on_site(self, span):
        return reverse("traces:span", args=[span.trace_id, span.span_id])

    def get_changelist(self, request, **kwargs):
        return SpanChangeList

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*_HEAVY)

    def get_object(self, request, object_id, from_field=None):
        # The change page shows the JSON columns the list defers.
        return Span.objects.filter(pk=object_id).first() if object_id.isdigit() else None

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        if is_trace_id(term):
            return queryset.filter(trace_id=term), False
        if is_span_id(term):
            # No index starts with span_id; the (trace, span_id) index holds both, so read
            # the matching pairs from it (a scan of the index, not of the span rows).
            pairs = list(Span.objects.filter(span_id=term).values_list("trace_id", flat=True)[:100])
            return queryset.filter(trace_id__in=pairs, span_id=term), False
        return queryset.none(), False

    @admin.display(description="trace")
    def trace_link(self, span):
        url = reverse("admin:traces_trace_change", args=[span.trace_id])
        return format_html('<a href="{}">{}</a>', url, span.trace_id)

    @admin.display(description="in msgtrace")
    def ui_link(self, span):
        url = reverse("traces:span", args=[span.trace_id, span.span_id])
        return format_html('<a href="{}">open the span in its trace page</a>', url)

    @admin.display(description="started")
    def started(self, span):
        return _ns_datetime(span.start_ns)

    @admin.display(description="ended")
    def ended(self, span):
        return _ns_datetime(span.end_ns)

    @admin.display(description="duration")
    def duration(self, span):
        return _duration(span.duration_ns)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """The price table. A price changes by adding a row with a later "valid from", so the
    spans already stored keep the price of their day (then ``msgtrace recompute_costs``)."""

    list_display = (
        "pattern", "provider", "valid_from", "input_per_million", "output_per_million",
        "cache_read_per_million", "cache_write_per_million", "reasoning_per_million", "currency",
    )  # fmt: skip
    list_filter = ("provider", "currency")
    search_fields = ("pattern",)
    ordering = ("pattern", "provider", "-valid_from")
    readonly_fields = ("updated_at",)

    def get_changeform_initial_data(self, request):
        # The span panel's "Add a price" link pre-fills pattern and provider; a new price
        # applies to every stored span unless told otherwise.
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("valid_from", "2000-01-01")
        return initial


# --- Alerts ---------------------------------------------------------------------------------


class AlertRuleAdminForm(forms.ModelForm):
    """The admin edits the stored fields (threshold in the metric's unit, seconds, targets
    as JSON), checked as the alerts page checks them."""

    class Meta:
        model = AlertRule
        fields = ("name", "query", "metric", "comparator", "threshold", "window_seconds",
                  "cooldown_seconds", "enabled", "muted_until", "targets")  # fmt: skip

    def clean_query(self):
        text = self.cleaned_data["query"].strip()
        try:
            compile_query(text)
        except QueryError as exc:
            raise forms.ValidationError(alerting.query_problem(exc)) from None
        return text

    def clean_window_seconds(self):
        seconds = self.cleaned_data["window_seconds"]
        low, high = alerting.MIN_WINDOW.total_seconds(), alerting.MAX_WINDOW.total_seconds()
        if not low <= seconds <= high:
            raise forms.ValidationError(f"Must be from {low:.0f} to {high:.0f} seconds.")
        return seconds

    def clean_cooldown_seconds(self):
        seconds = self.cleaned_data["cooldown_seconds"]
        if seconds > alerting.MAX_COOLDOWN.total_seconds():
            raise forms.ValidationError("Must be at most 7 days (604800 seconds).")
        return seconds

    def clean_targets(self):
        targets = self.cleaned_data["targets"]
        shape = 'a list of {"kind": "webhook" | "slack" | "email", "to": "…"}'
        if not isinstance(targets, list) or len(targets) > notify.MAX_TARGETS:
            raise forms.ValidationError(f"Must be {shape}, at most {notify.MAX_TARGETS}.")
        for target in targets:
            if not isinstance(target, dict) or set(target) != {"kind", "to"}:
                raise forms.ValidationError(f"Must be {shape}.")
            if target["kind"] not in notify.KINDS or not isinstance(target["to"], str):
                raise forms.ValidationError(f"Must be {shape}.")
            found, errors = notify.parse_targets(target["kind"], target["to"])
            if errors or len(found) != 1:
                raise forms.ValidationError(errors[0] if errors else f"Must be {shape}.")
        return targets


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleAdminForm
    list_display = ("name", "metric", "comparator", "threshold", "window_seconds", "state",
                    "enabled", "muted_until", "last_value", "last_evaluated_at")  # fmt: skip
    list_filter = ("state", "enabled", "metric")
    search_fields = ("name", "query")
    ordering = ("name",)
    readonly_fields = ("state", "state_since", "version", "last_value", "last_evaluated_at",
                       "last_fired_at", "error", "created_at", "updated_at")  # fmt: skip

    def save_model(self, request, obj, form, change):
        # Through the same service as the alerts page: a changed condition restarts the
        # rule from OK, and an evaluation that read it before the edit writes nothing.
        values = {name: form.cleaned_data[name] for name in AlertRuleAdminForm.Meta.fields}
        muted_until = values.pop("muted_until")
        saved = alerting.alert_rule_save(
            rule=AlertRule.objects.get(pk=obj.pk) if change else None,
            values=values,
            now=datetime.now(UTC),
        )
        alerting.alert_rule_mute(rule=saved, until=muted_until)
        obj.pk = saved.pk


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    """The history: read-only, as the alerts pages show it."""

    list_display = ("at", "rule", "kind", "value", "threshold", "trace_id", "delivery")
    list_filter = ("kind", "delivery")
    list_select_related = ("rule",)
    search_fields = ("rule__name", "trace_id", "message")
    ordering = ("-at",)
    date_hierarchy = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- API keys -------------------------------------------------------------------------------
# Create (the key is shown once), revoke, see when each was last used.


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.active()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "shown_prefix", "status", "created_at", "last_used_at")
    list_filter = (ApiKeyStatusFilter,)
    search_fields = ("name", "prefix")
    readonly_fields = ("shown_prefix", "status", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        # Adding asks only for a name; the key is made on save and shown once.
        return ("name",) if obj is None else ("name", *self.readonly_fields)

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"mt_{obj.prefix}_…"

    @admin.display(description="status", boolean=False)
    def status(self, obj: ApiKey) -> str:
        return "active" if obj.is_active else "revoked"

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
        else:
            # Kept on the instance only until response_add renders it: never stored, never
            # put in a message (messages can travel in a cookie).
            obj.issued_key = api_key_issue(api_key=obj)

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "api_key": obj,
            "key": obj.issued_key,
            "title": f"API key {obj.name} created",
            "changelist_url": reverse("admin:traces_apikey_changelist"),
        }
        return TemplateResponse(request, "admin/traces/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request, queryset):
        revoked = api_keys_revoke(keys=queryset)
        self.message_user(
            request,
            f"Revoked {revoked} API key{'s' * (revoked != 1)}; "
            "requests with them are refused within seconds.",
            messages.SUCCESS,
        )

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        keyring.invalidate()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        keyring.invalidate()

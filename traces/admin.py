from django.contrib import admin

from traces.models import Span, Trace


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ("trace_id", "workflow_name", "service_name", "span_count", "error_count")
    search_fields = ("=trace_id",)
    list_filter = ("service_name",)
    # The changelist would otherwise count a million rows on every page.
    show_full_result_count = False
    readonly_fields = [field.name for field in Trace._meta.fields]


@admin.register(Span)
class SpanAdmin(admin.ModelAdmin):
    list_display = ("name", "span_id", "trace_id", "span_type", "model", "is_error")
    search_fields = ("=span_id", "=trace__trace_id")
    show_full_result_count = False
    raw_id_fields = ("trace",)
    readonly_fields = [field.name for field in Span._meta.fields]

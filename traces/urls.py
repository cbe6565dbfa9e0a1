from django.urls import path

from traces import analytics_views, export_views, views

app_name = "traces"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("analytics", analytics_views.analytics_page, name="analytics"),
    path("traces", views.trace_list, name="list"),
    path("traces/delete", views.trace_bulk_delete, name="bulk_delete"),
    path("traces/compare", views.trace_compare, name="compare"),
    path("traces/export", export_views.trace_list_export, name="export"),
    path("traces/<str:trace_id>", views.trace_detail, name="detail"),
    path("traces/<str:trace_id>/delete", views.trace_delete, name="delete"),
    path(
        "traces/<str:trace_id>/export.<str:extension>",
        export_views.trace_export,
        name="trace_export",
    ),
    path("traces/<str:trace_id>/spans/<str:span_id>", views.span_detail, name="span"),
]

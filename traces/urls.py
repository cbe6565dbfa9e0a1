from django.urls import path

from traces import alert_views, analytics_views, export_views, views

app_name = "traces"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("analytics", analytics_views.analytics_page, name="analytics"),
    path("alerts", alert_views.alerts_page, name="alerts"),
    path("alerts/new", alert_views.alert_new, name="alert_new"),
    path("alerts/preview", alert_views.alert_preview, name="alert_preview"),
    path("alerts/test", alert_views.alert_test, name="alert_test"),
    path("alerts/badge", alert_views.alert_badge, name="alert_badge"),
    path("alerts/<int:pk>", alert_views.alert_detail, name="alert_detail"),
    path("alerts/<int:pk>/edit", alert_views.alert_edit, name="alert_edit"),
    path("alerts/<int:pk>/test", alert_views.alert_rule_test, name="alert_rule_test"),
    path("alerts/<int:pk>/mute", alert_views.alert_mute, name="alert_mute"),
    path("alerts/<int:pk>/delete", alert_views.alert_delete, name="alert_delete"),
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

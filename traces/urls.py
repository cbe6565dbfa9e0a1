from django.urls import path

from traces import views

app_name = "traces"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("traces", views.trace_list, name="list"),
    path("traces/delete", views.trace_bulk_delete, name="bulk_delete"),
    path("traces/compare", views.trace_compare, name="compare"),
    path("traces/<str:trace_id>", views.trace_detail, name="detail"),
    path("traces/<str:trace_id>/delete", views.trace_delete, name="delete"),
    path("traces/<str:trace_id>/spans/<str:span_id>", views.span_detail, name="span"),
]

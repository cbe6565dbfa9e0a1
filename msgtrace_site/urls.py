from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path

from traces import analytics_views, api, auth

# The OTLP collector (/v1/traces, /api/v1/traces/export) is mounted in asgi.py.
urlpatterns = [
    path("api/v1/traces", api.trace_list, name="api_trace_list"),
    path("api/v1/traces/<str:trace_id>", api.trace_detail, name="api_trace_detail"),
    path("api/v1/traces/<str:trace_id>/tree", api.trace_tree, name="api_trace_tree"),
    path("api/v1/stats", api.stats, name="api_stats"),
    path("api/v1/compare", api.compare, name="api_compare"),
    path(
        "api/v1/analytics/timeseries",
        analytics_views.api_timeseries,
        name="api_analytics_timeseries",
    ),
    path(
        "api/v1/analytics/breakdown",
        analytics_views.api_breakdown,
        name="api_analytics_breakdown",
    ),
    path("health", api.health, name="health"),
    # One login page for the UI and the admin, rate-limited (traces/auth.py).
    path("login", auth.RateLimitedLoginView.as_view(), name="login"),
    path("logout", LogoutView.as_view(), name="logout"),
    path("admin/login/", auth.admin_login, name="admin_login"),
    path("admin/", admin.site.urls),
    path("search/", include("search.urls")),
    path("", include("traces.urls")),
]

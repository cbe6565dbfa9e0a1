from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from traces.models import Trace


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    endpoint = request.build_absolute_uri("/v1/traces")
    recent = Trace.objects.newest_first()[:20]
    return render(request, "traces/home.html", {"endpoint": endpoint, "recent": recent})

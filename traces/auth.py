"""Who may see what when ``MSGTRACE_AUTH`` is on (docs/security.md).

Pages need a signed-in user; the JSON API takes a signed-in user or an API key; WebSockets
the same; the collector checks keys itself (ingest/views.py). Everything is refused unless
it is on the allow-list below, so a view added later is protected without doing anything.
With auth off (the default on loopback), nothing here refuses anything.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.views import LoginView, redirect_to_login
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.http import require_GET

from traces.keys import key_from_headers, keyring
from traces.models import ApiKey

# Reachable without signing in. The collector (/v1/traces, /api/v1/traces/export) is not
# here: it is mounted in front of Django (asgi.py) and checks API keys itself.
PUBLIC_PATHS = frozenset({"/login", "/logout", "/health", "/admin/login/"})
API_PREFIX = "/api/"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/" + settings.STATIC_URL.lstrip("/"))


def _api_refusal(message: str, *, invalid_key: bool = False) -> JsonResponse:
    response = JsonResponse({"error": message}, status=401)
    challenge = 'Bearer realm="msgtrace"' + (', error="invalid_token"' if invalid_key else "")
    response["WWW-Authenticate"] = challenge
    return response


def _csrf_protected(request: HttpRequest) -> None:
    """Stands in for a view without ``csrf_exempt`` when checking an API request's token."""


class LoginRequiredMiddleware:
    """With auth on: a signed-in user, or for ``/api/`` an API key, else refused.

    Pages redirect to the login page; an htmx request gets 401 with ``HX-Redirect`` (so the
    whole page goes to the login page, not a login form swapped into a fragment); the API
    answers 401 JSON with ``WWW-Authenticate``.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not settings.MSGTRACE_AUTH or _is_public(request.path_info):
            return self.get_response(request)
        if request.path_info.startswith(API_PREFIX):
            return self._api(request)
        if request.user.is_authenticated:
            return self.get_response(request)
        if request.headers.get("HX-Request") == "true":
            response = HttpResponse("sign in first", status=401, content_type="text/plain")
            response["HX-Redirect"] = redirect_to_login(_htmx_page(request)).url
            return response
        return redirect_to_login(request.get_full_path())

    def _api(self, request: HttpRequest) -> HttpResponse:
        key = key_from_headers(request.headers)
        if key:
            entry = keyring.check(key)
            if entry is None:
                return _api_refusal("invalid or revoked API key", invalid_key=True)
            # A key is not a cookie: another site cannot make a browser send it, so the
            # request needs no CSRF token.
            request.api_key = entry
            return self.get_response(request)
        if not request.user.is_authenticated:
            return _api_refusal(
                "authentication required: send an API key (Authorization: Bearer <key> or "
                "x-api-key: <key>) or sign in"
            )
        # The API views are csrf_exempt because programs send no cookies. A request that
        # is let in on the session cookie alone must prove it comes from our own pages.
        if request.method not in _SAFE_METHODS:
            checker = CsrfViewMiddleware(self.get_response)
            if checker.process_view(request, _csrf_protected, (), {}) is not None:
                return JsonResponse(
                    {"error": "CSRF check failed: send the X-CSRFToken header, or use an API key"},
                    status=403,
                )
        return self.get_response(request)


def _htmx_page(request: HttpRequest) -> str:
    """The page an htmx request came from (its path and query), to come back to after login."""
    current = urlsplit(request.headers.get("HX-Current-URL", ""))
    if not current.path:
        return request.get_full_path()
    return current.path + (f"?{current.query}" if current.query else "")


def auth_context(request: HttpRequest) -> dict:
    return {"msgtrace_auth": settings.MSGTRACE_AUTH}


# --- login, rate-limited --------------------------------------------------------------------

LOGIN_WINDOW_SECONDS = 300.0


class FailureLimiter:
    """Failed attempts per key (a client address, a user name) over a sliding window.

    In memory, per process: a restart forgets, and several processes behind one proxy each
    count on their own. That is enough to turn a password guesser's thousands of tries a
    minute into a handful. Bounded: beyond ``max_keys`` the oldest counters are dropped.
    """

    def __init__(self, window: float = LOGIN_WINDOW_SECONDS, max_keys: int = 50_000) -> None:
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, keys: list[str], limit: int) -> int:
        """0 if another attempt may be made now, else the whole seconds to wait."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                times.append(now)
                self._failures.pop(key, None)
                self._failures[key] = times  # re-inserted: the dict stays oldest first
            while len(self._failures) > self.max_keys:
                del self._failures[next(iter(self._failures))]

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()


login_limiter = FailureLimiter()


def client_address(request: HttpRequest) -> str:
    """Who is signing in: the peer, or behind our TLS proxy (``MSGTRACE_SECURE_PROXY``) the
    address that proxy saw, which it appended last to X-Forwarded-For. Earlier entries
    came from the client and prove nothing."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if getattr(settings, "MSGTRACE_SECURE_PROXY", False) and forwarded.strip():
        return forwarded.rsplit(",", 1)[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def _limiter_keys(request: HttpRequest) -> list[str]:
    username = request.POST.get("username", "").strip().lower()[:150]
    keys = [f"ip:{client_address(request)}"]
    return [*keys, f"user:{username}"] if username else keys


class RateLimitedLoginView(LoginView):
    """Django's login, refused with 429 and Retry-After after too many failures.

    ``MSGTRACE_LOGIN_RATE_LIMIT`` failures in five minutes from one client address, or for
    one user name, lock that address or name until the oldest failure is five minutes old.
    A locked attempt is refused before the password is checked, so it teaches nothing.
    """

    template_name = "registration/login.html"

    def post(self, request, *args, **kwargs):
        limit = settings.MSGTRACE_LOGIN_RATE_LIMIT
        wait = login_limiter.retry_after(_limiter_keys(request), limit) if limit else 0
        if wait:
            # An unbound form: validating the posted one would check the password.
            form = self.get_form_class()(
                request, initial={"username": request.POST.get("username")}
            )
            minutes = math.ceil(wait / 60)
            refusal = (
                f"Too many failed sign-ins. Try again in {minutes} minute{'s' * (minutes != 1)}."
            )
            context = self.get_context_data(form=form, refusal=refusal)
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        if settings.MSGTRACE_LOGIN_RATE_LIMIT:
            login_limiter.failed(_limiter_keys(self.request))
        return super().form_invalid(form)

    def form_valid(self, form):
        # The address keeps its count: one account's success must not reset the counter
        # of a client that is guessing other accounts' passwords.
        login_limiter.clear(f"user:{form.get_user().get_username().lower()}")
        return super().form_valid(form)


@require_GET
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin signs in through our login page, so its attempts count like any other."""
    return redirect_to_login(request.GET.get("next") or "/admin/")


# --- WebSockets -----------------------------------------------------------------------------

# The JSON event stream is for programs, which may show an API key instead of a session.
_KEY_SOCKETS = frozenset({"/api/v1/ws"})


class WebSocketAuthGuard:
    """With auth on, refuses (HTTP 403 at the handshake) a socket without a signed-in session
    (``scope["user"]``, from channels' AuthMiddlewareStack outside this) or, on
    ``/api/v1/ws``, a valid API key."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and settings.MSGTRACE_AUTH and not await _ws_allowed(scope):
            await WebsocketDenier.as_asgi()(scope, receive, send)
            return
        await self.inner(scope, receive, send)


async def _ws_allowed(scope) -> bool:
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return True
    if scope["path"] not in _KEY_SOCKETS:
        return False
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }
    key = key_from_headers(headers)
    return bool(key) and await keyring.acheck(key) is not None


# --- msgtrace start -------------------------------------------------------------------------


def serving_check() -> tuple[str | None, list[str]]:
    """What ``msgtrace start`` must say about auth: a reason to refuse, or warnings."""
    host, port = settings.HOST, settings.PORT
    if not settings.MSGTRACE_AUTH:
        if settings.HOST_IS_LOOPBACK:
            return None, []
        return None, [
            f"WARNING: MSGTRACE_AUTH=off while bound to {host}: no login and no API key. "
            f"Anyone who can reach port {port} can read, send and delete every trace."
        ]
    try:
        has_user = get_user_model().objects.filter(is_active=True).exists()
        has_key = ApiKey.objects.active().exists()
    except DatabaseError as exc:
        return f"cannot look for users and API keys ({exc}); start without --no-migrate", []
    if not has_user and not has_key:
        why = "MSGTRACE_AUTH=on" if settings.HOST_IS_LOOPBACK else f"bound to {host}"
        return (
            f"authentication is on ({why}) but there is no user and no API key yet, so "
            "nobody could sign in or send traces. Create them first:\n"
            "  msgtrace createsuperuser          # a user for the web UI and the admin\n"
            "  msgtrace create_api_key NAME      # a key for exporters and API clients\n"
            "or set MSGTRACE_AUTH=off to serve without authentication (anyone who can "
            f"reach port {port} could then read, send and delete traces)."
        ), []
    warnings = []
    if not os.environ.get("MSGTRACE_SECRET_KEY", "").strip():
        warnings.append(
            "MSGTRACE_SECRET_KEY is not set: sign-ins end at every restart and are not "
            "shared between msgtrace processes"
        )
    if not has_user:
        warnings.append("no user yet: nobody can sign in to the UI (msgtrace createsuperuser)")
    if not has_key:
        warnings.append(
            "no API key yet: exporters get 401 (msgtrace create_api_key NAME, or the admin)"
        )
    return None, warnings

"""msgtrace settings: one module, every knob an ``MSGTRACE_*`` environment variable.

A malformed value stops start-up with an ``ImproperlyConfigured`` naming the variable;
``manage.main`` prints it without a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ImproperlyConfigured(f"{name} must be {bounds}, got {value}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of on/off, true/false, 1/0, got {raw!r}")


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def database_from_url(name: str, url: str) -> dict:
    """Turn ``postgres://user:pass@host:port/db?sslmode=require`` into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// or postgresql:// URL, got scheme {parts.scheme!r}"
        )
    db_name = unquote(parts.path.lstrip("/"))
    if not db_name:
        raise ImproperlyConfigured(f"{name} must name a database, e.g. postgres://host/msgtrace")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": db_name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        # Page requests reuse connections; the ingest writer keeps its own for its lifetime.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }


DEBUG = env_bool("MSGTRACE_DEBUG", False)
HOST = env_str("MSGTRACE_HOST", "127.0.0.1")
PORT = env_int("MSGTRACE_PORT", 4321, minimum=1, maximum=65535)

# A server bound to loopback needs no secret to be shared; a random per-process key is
# correct there (sessions do not outlive the process). Exposed deployments set their own.
SECRET_KEY = env_str("MSGTRACE_SECRET_KEY", "") or secrets.token_urlsafe(50)

# Bound to loopback, only loopback names are served (a DNS-rebinding page cannot reach
# us under its own host name); bound to all interfaces, the operator lists the names.
_LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env_list("MSGTRACE_ALLOWED_HOSTS") or (
    ["*"] if HOST in {"0.0.0.0", "::"} else [*_LOOPBACK_HOSTS, HOST]  # noqa: S104
)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


# --- Authentication (docs/security.md) --------------------------------------------------
# On loopback only this machine's users can connect, as with any local dev server; any
# other address gets logins for the UI and API keys for ingest unless told otherwise.
# Read per request (traces/auth.py, ingest/views.py), so tests can override it.
HOST_IS_LOOPBACK = is_loopback(HOST)
MSGTRACE_AUTH = env_bool("MSGTRACE_AUTH", not HOST_IS_LOOPBACK)
# Spans per second per API key at the collector (a token bucket); 0 is no limit.
MSGTRACE_INGEST_RATE_LIMIT = env_int("MSGTRACE_INGEST_RATE_LIMIT", 0)
# Failed logins allowed per client address and per user name in 5 minutes; then 429.
MSGTRACE_LOGIN_RATE_LIMIT = env_int("MSGTRACE_LOGIN_RATE_LIMIT", 10)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "traces:dashboard"
LOGOUT_REDIRECT_URL = "login"
# Django's usual checks on passwords set through createsuperuser and the admin.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "django_htmx",
    "django_filters",
    "template_partials",
    "channels",
    "traces",
    "ingest",
    "search",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files are answered here, before sessions, auth and the rest (see STORAGES).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before any view runs: with MSGTRACE_AUTH on, everything not on its allow-list
    # needs a signed-in user (or an API key, for /api/).
    "traces.auth.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "msgtrace_site.urls"
ASGI_APPLICATION = "msgtrace_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "traces.auth.auth_context",
            ],
        },
    },
]

# How long a write waits for a lock before ingest answers 503 (and a page gives up).
DB_TIMEOUT = env_int("MSGTRACE_DB_TIMEOUT", 10, minimum=1, maximum=600)

_database_url = env_str("MSGTRACE_DATABASE_URL", "")
if _database_url:
    DATABASES = {"default": database_from_url("MSGTRACE_DATABASE_URL", _database_url)}
    _options = DATABASES["default"]["OPTIONS"]
    _options["options"] = f"{_options.get('options', '')} -c lock_timeout={DB_TIMEOUT * 1000}"
else:
    DB_PATH = Path(env_str("MSGTRACE_DB_PATH", "msgtrace.db")).expanduser().resolve()
    if DB_PATH.is_dir():
        raise ImproperlyConfigured(f"MSGTRACE_DB_PATH points at a directory: {DB_PATH}")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DB_PATH,
            "OPTIONS": {
                # WAL lets pages read while the ingest writer commits. synchronous=FULL
                # makes a 200 survive power loss, not only kill -9; on these disks it
                # costs nothing measurable (shared/PERFORMANCE.md).
                # auto_vacuum only takes effect on a database without tables, and must
                # come before journal_mode, whose header write fixes the file's format:
                # new databases get it, so purge can give space back in short steps
                # (traces/purge.py); an older database keeps its mode until a VACUUM.
                "init_command": (
                    "PRAGMA auto_vacuum=INCREMENTAL;"
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=FULL;"
                    "PRAGMA temp_store=MEMORY;"
                    "PRAGMA cache_size=-65536;"
                ),
                # Take the write lock at BEGIN, so a transaction never fails half-way
                # on an upgrade from a read lock; wait for it rather than failing.
                "transaction_mode": "IMMEDIATE",
                "timeout": DB_TIMEOUT,
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("MSGTRACE_STATIC_ROOT", str(BASE_DIR / "staticfiles"))).resolve()
# WhiteNoise serves static files from the server process. Once `msgtrace collectstatic` has
# built STATIC_ROOT (the Docker image does), pages link hashed names that WhiteNoise serves
# gzipped and cacheable for a year. Without that build (a checkout, the test suite) pages
# link the plain names and WhiteNoise reads them from the source tree on each request, so
# development needs no build step and an edited file shows on reload.
_STATIC_BUILT = (STATIC_ROOT / "staticfiles.json").is_file()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "traces.staticfiles.BuiltOrSourceStorage"},
}
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = not _STATIC_BUILT
# Our CSS and JS are for our pages only (WhiteNoise would allow any origin).
WHITENOISE_ALLOW_ALL_ORIGINS = False

# --- HTTPS and browser hardening (docs/deployment.md) -------------------------------------
# msgtrace speaks plain HTTP; TLS ends at a reverse proxy. MSGTRACE_SECURE_PROXY=on says
# so: the proxy's X-Forwarded-Proto is believed (turn it on only when clients reach the
# port through the proxy alone, or a client could claim https itself), page requests that
# came over plain HTTP are redirected to https, cookies are marked Secure, HSTS is sent.
MSGTRACE_SECURE_PROXY = env_bool("MSGTRACE_SECURE_PROXY", False)
if MSGTRACE_SECURE_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = MSGTRACE_SECURE_PROXY
# Health checks (the image's own, a load balancer's) call plain HTTP from the inside.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = MSGTRACE_SECURE_PROXY
# No page script reads the CSRF cookie: pages carry the token in <body hx-headers>.
CSRF_COOKIE_HTTPONLY = True
# Sent only on HTTPS responses. Browsers remember it this long, so an operator trying
# HTTPS out may start lower; 0 sends none (and `check --deploy` warns).
SECURE_HSTS_SECONDS = env_int("MSGTRACE_HSTS_SECONDS", 365 * 24 * 3600, maximum=2 * 365 * 24 * 3600)
# Trace URLs carry ids and search queries: other sites that a page links to get no referrer.
SECURE_REFERRER_POLICY = "same-origin"
SILENCED_SYSTEM_CHECKS = [
    # HSTS includeSubDomains and preload (security.W005, W021) bind every other host of
    # the operator's domain to HTTPS too; that is the domain owner's decision, not ours.
    "security.W005",
    "security.W021",
]

# Span data is hostile text rendered into pages. Should any of it ever get past template
# escaping, the browser still runs no inline script or event handler, fetches nothing from
# another origin (a prompt's ![x](http://evil.example/p.png) or <img src=http://...>
# cannot phone home with the page's data), and no other site can frame the pages. Our JS
# and CSS are files under /static/; no template has inline script or style attributes
# (a template that needs an inline script gives it {{ request.csp_nonce }}).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Ingest -----------------------------------------------------------------------------
# Largest OTLP body accepted, before and after gzip decompression.
MSGTRACE_MAX_BODY_BYTES = env_int("MSGTRACE_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024)
# Attribute strings longer than this are cut; the original length is recorded.
MSGTRACE_MAX_ATTRIBUTE_CHARS = env_int("MSGTRACE_MAX_ATTRIBUTE_CHARS", 65536, minimum=64)
# Spans waiting for the writer; beyond this, ingest answers 503 + Retry-After
# instead of buffering without bound.
MSGTRACE_MAX_PENDING_SPANS = env_int("MSGTRACE_MAX_PENDING_SPANS", 200_000, minimum=1000)
# Processes that decode OTLP bodies beside the server process; 0 decodes in a thread of
# the server process itself. One per core beyond the first, up to 4.
MSGTRACE_DECODE_WORKERS = env_int(
    "MSGTRACE_DECODE_WORKERS", max(1, min(4, (os.cpu_count() or 1) - 1)), maximum=32
)
# Django reads the raw body; the ingest view enforces MSGTRACE_MAX_BODY_BYTES itself.
DATA_UPLOAD_MAX_MEMORY_SIZE = None

CORS_ALLOWED_ORIGINS = [o for o in env_list("MSGTRACE_CORS_ORIGINS") if o != "*"]
CORS_ALLOW_ALL_ORIGINS = "*" in env_list("MSGTRACE_CORS_ORIGINS")
CORS_URLS_REGEX = r"^/(v1/traces|api/)"
for _origin in CORS_ALLOWED_ORIGINS:
    if urlsplit(_origin).scheme not in {"http", "https"} or not urlsplit(_origin).netloc:
        raise ImproperlyConfigured(
            f"MSGTRACE_CORS_ORIGINS entries must look like https://host[:port], got {_origin!r}"
        )

# Live updates reach WebSocket clients of this process (in memory) or, with Redis, of every
# msgtrace process sharing the database, whichever one ingested the spans.
MSGTRACE_REDIS_URL = env_str("MSGTRACE_REDIS_URL", "")
if MSGTRACE_REDIS_URL:
    if not MSGTRACE_REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            "MSGTRACE_REDIS_URL must start with redis://, rediss:// or unix://"
        )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [MSGTRACE_REDIS_URL], "capacity": 200, "expiry": 10},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 200}}
    }

# --- Retention --------------------------------------------------------------------------
# The server deletes traces that started more than this many days ago, at start and then
# daily (traces/purge.py); 0 keeps everything. The cap keeps the cut-off a valid date.
MSGTRACE_RETENTION_DAYS = env_int("MSGTRACE_RETENTION_DAYS", 0, minimum=0, maximum=36500)

# --- Alerts (docs/alerting.md) ------------------------------------------------------------
# Seconds between two evaluations of the alert rules by the server; 0 leaves them to
# `msgtrace evaluate_alerts` (cron). Both at once are safe: a lease in the database.
MSGTRACE_ALERT_INTERVAL = env_int("MSGTRACE_ALERT_INTERVAL", 30, minimum=0, maximum=3600)
# Each webhook (and SMTP) attempt waits this long for an answer...
MSGTRACE_ALERT_WEBHOOK_TIMEOUT = env_int("MSGTRACE_ALERT_WEBHOOK_TIMEOUT", 5, minimum=1, maximum=60)
# ...and a 5xx, 429 or no answer is tried this many times in all, 1 s, 2 s, 4 s... apart.
MSGTRACE_ALERT_WEBHOOK_ATTEMPTS = env_int(
    "MSGTRACE_ALERT_WEBHOOK_ATTEMPTS", 3, minimum=1, maximum=10
)
# The address notifications link to; the default only works on this machine.
MSGTRACE_BASE_URL = env_str("MSGTRACE_BASE_URL", "") or (
    f"http://{'127.0.0.1' if HOST in {'0.0.0.0', '::'} else HOST}:{PORT}"  # noqa: S104
)
_base = urlsplit(MSGTRACE_BASE_URL)
if _base.scheme not in {"http", "https"} or not _base.netloc:
    raise ImproperlyConfigured(
        f"MSGTRACE_BASE_URL must look like https://host[:port], got {MSGTRACE_BASE_URL!r}"
    )
# Alert emails go through Django's SMTP backend; no MSGTRACE_EMAIL_HOST, no email targets.
EMAIL_HOST = env_str("MSGTRACE_EMAIL_HOST", "")
EMAIL_PORT = env_int("MSGTRACE_EMAIL_PORT", 587, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("MSGTRACE_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("MSGTRACE_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("MSGTRACE_EMAIL_USE_TLS", True)
EMAIL_USE_SSL = env_bool("MSGTRACE_EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    if "MSGTRACE_EMAIL_USE_TLS" in os.environ:
        raise ImproperlyConfigured(
            "MSGTRACE_EMAIL_USE_TLS and MSGTRACE_EMAIL_USE_SSL exclude each other"
        )
    EMAIL_USE_TLS = False  # SSL asked for, STARTTLS only by default: SSL it is
EMAIL_TIMEOUT = MSGTRACE_ALERT_WEBHOOK_TIMEOUT
DEFAULT_FROM_EMAIL = env_str("MSGTRACE_EMAIL_FROM", "msgtrace@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "msgtrace": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django": {"handlers": ["console"], "level": "WARNING"},
    },
}

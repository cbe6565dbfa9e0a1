"""API keys: making them, checking them on the hot path, and rate-limiting by key.

A key is ``mt_<prefix>_<secret>``: the prefix (8 hex digits) names the key and finds its
row; the secret is 32 random letters and digits (190 bits). Only the SHA-256 of the
whole key is stored. A fast hash is right here, unlike for passwords: slow hashes exist to
make guessing low-entropy secrets expensive, and nobody guesses 190 random bits, however
fast each guess is. It also lets the collector check a key in microseconds.

The collector answers ~15,000 spans/s, so checking a key must not cost a query: the
active keys' hashes live in memory (``keyring``), re-read every ``REFRESH_SECONDS`` and at
once when this process creates or revokes a key. A key whose prefix is not in memory is
looked up by that prefix (one indexed query, at most ``MISS_LOOKUPS_PER_SECOND`` a second
for the whole process), so a key made by ``msgtrace create_api_key`` in another process
works on its first request while made-up keys cannot turn into a query each. A key
revoked elsewhere stops working within ``REFRESH_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from django.db import close_old_connections, connections
from django.utils import timezone

from traces.models import ApiKey

logger = logging.getLogger("msgtrace.ingest")

# How stale the in-memory key set may get: the longest a key revoked in another process
# keeps working.
REFRESH_SECONDS = 10.0
# Lookups of prefixes not in memory, per second (a token bucket): new keys are found at
# once, and a flood of made-up keys costs the database at most this.
MISS_LOOKUPS_PER_SECOND = 10.0
# ``last_used_at`` is "used in this minute", which is all the admin needs; a write per
# request would fight the ingest writer for SQLite's write lock.
LAST_USED_EVERY_SECONDS = 60.0
# After a failed write (SQLite busy past its timeout), the recorder tries again this late.
RECORD_RETRY_SECONDS = 5.0

KEY_PATTERN = re.compile(r"mt_([0-9a-f]{8})_([A-Za-z0-9]{32})")
_ALPHABET = string.ascii_letters + string.digits


def generate_key() -> tuple[str, str]:
    """A new ``(key, prefix)``."""
    prefix = secrets.token_hex(4)
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    return f"mt_{prefix}_{secret}", prefix


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_from_headers(headers: Mapping[str, str]) -> str:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``.

    ``headers`` is looked up with lower-case names (the collector's dict, and Django's
    case-insensitive ``request.headers``)."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip()


# --- services -------------------------------------------------------------------------------


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """A new key named ``name``: the row, and the key itself, which is never stored."""
    name = name.strip()
    if not name:
        raise ValueError("an API key needs a name")
    api_key = ApiKey(name=name[:100])
    return api_key, api_key_issue(api_key=api_key)


def api_key_issue(*, api_key: ApiKey) -> str:
    """Give an unsaved ``ApiKey`` a new key and save it; the key, to show once."""
    key, prefix = generate_key()
    api_key.prefix, api_key.key_hash = prefix, key_digest(key).hex()
    api_key.save()
    keyring.invalidate()
    return key


def api_keys_revoke(*, keys: Iterable[ApiKey]) -> int:
    """Revoke the active ones among ``keys``; how many were revoked."""
    ids = [key.pk for key in keys]
    revoked = ApiKey.objects.active().filter(pk__in=ids).update(revoked_at=timezone.now())
    keyring.invalidate()
    return revoked


# --- the in-memory key set ------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    id: int
    prefix: str
    name: str
    digest: bytes


class KeyRing:
    """The active keys, by prefix, for checking without a query (see the module docstring)."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, KeyEntry] = {}
        self._loaded_at = -math.inf
        self._load_lock = threading.Lock()
        self._lookups = MISS_LOOKUPS_PER_SECOND  # tokens for unknown prefixes
        self._lookups_at = time.monotonic()
        self._recorded: dict[int, float] = {}  # key id -> when its use was last noted
        self._pending: dict[int, datetime] = {}  # uses the recorder has yet to write
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # held while a flush writes
        self._wake = threading.Event()
        self._recorder: threading.Thread | None = None

    def invalidate(self) -> None:
        """Re-read the keys before the next check (this process created or revoked one)."""
        self._loaded_at = -math.inf

    def reset(self) -> None:
        """Forget the keys and the lookup budget, as a new process would (for tests)."""
        with self._load_lock:
            self._by_prefix, self._loaded_at = {}, -math.inf
            self._lookups, self._lookups_at = MISS_LOOKUPS_PER_SECOND, time.monotonic()
        self._recorded.clear()
        # Wait out a write in progress and drop the rest, so that no write reaches the
        # database after a test is over (its tables may be gone by then).
        with self._flush_lock, self._pending_lock:
            self._pending.clear()

    def _must_read(self, prefix: str) -> bool:
        """Whether answering for ``prefix`` needs the database (and takes a lookup token)."""
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            return True
        if prefix in self._by_prefix:
            return False
        with self._load_lock:
            now = time.monotonic()
            self._lookups = min(
                MISS_LOOKUPS_PER_SECOND,
                self._lookups + (now - self._lookups_at) * MISS_LOOKUPS_PER_SECOND,
            )
            self._lookups_at = now
            if self._lookups < 1:
                return False  # a flood of unknown keys: refuse without asking
            self._lookups -= 1
            return True

    def _read(self, prefix: str) -> None:
        """All active keys when the set is stale, else the one row with ``prefix``."""
        fields = ("id", "prefix", "name", "key_hash")
        with self._load_lock:
            if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
                rows = ApiKey.objects.active().values_list(*fields)
                self._by_prefix = {row[1]: _entry(*row) for row in rows}
                self._loaded_at = time.monotonic()
            elif prefix not in self._by_prefix:
                row = ApiKey.objects.active().filter(prefix=prefix).values_list(*fields).first()
                if row is not None:
                    self._by_prefix = {**self._by_prefix, prefix: _entry(*row)}

    def _match(self, key: str, prefix: str) -> KeyEntry | None:
        entry = self._by_prefix.get(prefix)
        # Constant time: how long the comparison takes says nothing about the stored hash.
        if entry is None or not hmac.compare_digest(key_digest(key), entry.digest):
            return None
        self._note_use(entry.id)
        return entry

    def check(self, key: str) -> KeyEntry | None:
        """The active key ``key`` is, or None. May read the database (sync code only)."""
        parsed = KEY_PATTERN.fullmatch(key)
        if parsed is None:
            return None
        if self._must_read(parsed[1]):
            self._read(parsed[1])
        return self._match(key, parsed[1])

    async def acheck(self, key: str) -> KeyEntry | None:
        """``check`` for the event loop: no thread hop unless the key set must be re-read."""
        parsed = KEY_PATTERN.fullmatch(key)
        if parsed is None:
            return None
        if self._must_read(parsed[1]):
            await database_sync_to_async(self._read)(parsed[1])
        return self._match(key, parsed[1])

    # --- last used, off the request path ---------------------------------------------------

    def _note_use(self, key_id: int) -> None:
        now = time.monotonic()
        if now - self._recorded.get(key_id, -math.inf) < LAST_USED_EVERY_SECONDS:
            return
        self._recorded[key_id] = now
        with self._pending_lock:
            self._pending[key_id] = timezone.now()
        if self._recorder is None or not self._recorder.is_alive():
            self._recorder = threading.Thread(
                target=self._record_forever, name="msgtrace-key-use", daemon=True
            )
            self._recorder.start()
        self._wake.set()

    def _record_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            written = self.flush()
            # A write a minute at most: not worth holding a connection open in between.
            connections.close_all()
            if not written:
                time.sleep(RECORD_RETRY_SECONDS)
                self._wake.set()

    def flush(self) -> bool:
        """Write the pending ``last_used_at`` times now (the recorder thread's work); False
        if the database refused, the times then stay pending."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> bool:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return True
        close_old_connections()
        try:
            for key_id, when in list(pending.items()):
                ApiKey.objects.filter(pk=key_id).update(last_used_at=when)
                del pending[key_id]
            return True
        except Exception as exc:  # a busy database must not kill the recorder: retry
            logger.warning("could not record API key use yet: %s", exc)
            with self._pending_lock:
                self._pending = {**pending, **self._pending}
            return False
        finally:
            close_old_connections()


def _entry(pk: int, prefix: str, name: str, key_hash: str) -> KeyEntry:
    return KeyEntry(pk, prefix, name, bytes.fromhex(key_hash))


keyring = KeyRing()


# --- per-key rate limit (MSGTRACE_INGEST_RATE_LIMIT) ----------------------------------------

# A key may send this many seconds' worth of its rate in one burst.
BURST_SECONDS = 10.0


class SpanBudget:
    """A token bucket of spans per key, allowed to go into debt.

    A request's span count is known only after decoding, so a request is let in while the
    bucket is above zero, and its spans are then taken out, possibly below zero. The key's
    next requests wait (429 with Retry-After) until the bucket refills past zero. Over any
    long stretch a key gets ``rate`` spans/s, and no refused body is ever decoded.
    Lives in the server's event loop: one thread, no lock.
    """

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, at)

    def _tokens(self, key_id: int, rate: float, now: float) -> float:
        tokens, at = self._buckets.get(key_id, (rate * BURST_SECONDS, now))
        return min(rate * BURST_SECONDS, tokens + (now - at) * rate)

    def retry_after(self, key_id: int, rate: float) -> int:
        """0 when the key may send now, else the whole seconds until it may."""
        tokens = self._tokens(key_id, rate, time.monotonic())
        return 0 if tokens > 0 else max(1, math.ceil(-tokens / rate))

    def spend(self, key_id: int, rate: float, spans: int) -> None:
        now = time.monotonic()
        self._buckets[key_id] = (self._tokens(key_id, rate, now) - spans, now)


span_budget = SpanBudget()

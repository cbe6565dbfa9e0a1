"""Work the server repeats on a schedule (retention, analytics rollups, alert rules)."""

from __future__ import annotations

import logging
import threading
from typing import Self

from django.db import close_old_connections, connection


class Periodic:
    """Calls ``tick()`` at start and then every ``interval_s`` seconds, in a daemon thread,
    until ``stop()``.

    A thread, not a task on the server's event loop: ticks are blocking database calls (a
    purge may take minutes, a webhook its whole timeout), and the loop must keep answering
    OTLP requests meanwhile. A tick that raises is logged, and the next one still comes.
    The thread has its own database connection: closed after each tick, unless
    ``keep_connection`` (for ticks seconds apart), and always after a failure.
    """

    name = "periodic"  # the thread is msgtrace-<name>
    failure = "failed"  # what the log says when a tick raises
    logger = logging.getLogger("msgtrace")
    keep_connection = False

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.rounds = 0
        self.round_done = threading.Event()  # set after each tick, for whoever waits
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"msgtrace-{self.name}", daemon=True
        )

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            close_old_connections()  # drops a connection the database closed meanwhile
            try:
                self.tick()
            except Exception:  # a failed tick must not end the schedule: the next one retries
                self.logger.exception("%s; trying again in %g s", self.failure, self.interval_s)
                connection.close()
            else:
                if not self.keep_connection:
                    connection.close()
            self.rounds += 1
            self.round_done.set()
            self._stop.wait(self.interval_s)

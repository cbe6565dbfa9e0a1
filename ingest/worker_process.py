"""Set-up inside a decode worker process. Standard library only: Django is not set up there."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int) -> None:
    """Exit when the server process is gone, even after a kill -9 that left us orphaned."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="msgtrace-parent-watch", daemon=True).start()

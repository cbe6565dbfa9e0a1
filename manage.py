#!/usr/bin/env python
"""msgtrace's command line: ``manage.py`` and the ``msgtrace`` console script are the same.

``msgtrace start`` serves the app; every other ``msgtrace <cmd>`` runs the Django
management command of that name.
"""

from __future__ import annotations

import argparse
import os
import sys

# Options of `start` that settings must see before Django loads them.
_START_ENV_OPTIONS = {
    "--db-path": "MSGTRACE_DB_PATH",
    "--host": "MSGTRACE_HOST",
    "--port": "MSGTRACE_PORT",
}


def _export_start_options(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "start":
        return
    parser = argparse.ArgumentParser(add_help=False)
    for option in _START_ENV_OPTIONS:
        parser.add_argument(option)
    known, _ = parser.parse_known_args(argv[2:])
    for option, env_name in _START_ENV_OPTIONS.items():
        value = getattr(known, option.lstrip("-").replace("-", "_"))
        if value is not None:
            os.environ[env_name] = value


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    argv[0] = os.path.basename(argv[0]) or "msgtrace"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "msgtrace_site.settings")
    _export_start_options(argv)

    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(argv)
    except ImproperlyConfigured as exc:
        # A bad MSGTRACE_* value: say which, without a traceback.
        sys.stderr.write(f"msgtrace: configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()

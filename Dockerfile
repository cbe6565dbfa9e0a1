# msgtrace: OTLP/HTTP trace collector, web UI and JSON API on port 4321.
# SQLite in the /data volume by default; set MSGTRACE_DATABASE_URL for PostgreSQL.
# Behind a TLS proxy, with PostgreSQL and Redis: docker-compose.yml, docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app

# Editable: templates/ and static/ live at the top of the source tree, and settings find
# them relative to it, so the app runs from /app rather than from site-packages.
# collectstatic builds /app/staticfiles: hashed, gzipped copies that the server (WhiteNoise)
# serves with a year-long cache; without it pages would use the unhashed source files.
RUN pip install --no-cache-dir -e . \
    && msgtrace collectstatic --noinput --verbosity 0 \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin msgtrace \
    && mkdir -p /data \
    && chown msgtrace:msgtrace /data

ENV MSGTRACE_DB_PATH=/data/msgtrace.db
# Declared after the chown, so a new volume starts out owned by msgtrace.
VOLUME /data

USER msgtrace
EXPOSE 4321

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MSGTRACE_PORT', '4321'), timeout=4)"]

CMD ["msgtrace", "start", "--host", "0.0.0.0"]

# Gatehouse API and job worker image.
#
#   docker build -t gatehouse .
#   docker run -p 8000:8000 --env-file .env gatehouse                       # the API (gunicorn)
#   docker run --env-file .env gatehouse flask --app wsgi jobs worker       # a job worker
#   docker run --env-file .env gatehouse flask --app wsgi db upgrade        # migrations
#
# Stage 1 builds every wheel (the dependencies of setup.cfg); the final stage installs them without
# network or compilers, copies the source tree (migrations are read from ./migrations) and runs as an
# unprivileged user with nothing writable but /tmp. Give the container at least 30 s to stop
# (`docker stop -t 30`, compose `stop_grace_period`, Kubernetes terminationGracePeriodSeconds): gunicorn
# drains in-flight requests for up to GUNICORN_GRACEFUL_TIMEOUT (25 s) after SIGTERM.

# Both stages use the same base, pinned by version and digest (the tag says which Python, the digest
# what is pulled); Renovate (.github/renovate.json) updates both lines together.
FROM python:3.11.14-slim-trixie@sha256:193fdd0bbcb3d2ae612bd6cc3548d2f7c78d65b549fcaa8af75624c47474444d AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only the metadata: the dependencies come from setup.cfg, so a source change does not rebuild
# this layer. Every dependency becomes a wheel (pure-Python sdists are built here); the project's
# own wheel (of a stub package) is dropped: the image runs the source tree, which keeps
# migrations/ beside the package.
COPY pyproject.toml setup.cfg README.md ./
RUN mkdir webapp && touch webapp/__init__.py \
    && pip wheel --wheel-dir /wheels . \
    && rm -f /wheels/gatehouse-*.whl

FROM python:3.11.14-slim-trixie@sha256:193fdd0bbcb3d2ae612bd6cc3548d2f7c78d65b549fcaa8af75624c47474444d AS runtime
LABEL org.opencontainers.image.title="gatehouse" \
      org.opencontainers.image.description="Gatehouse user and access management service" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/gatehouse/gatehouse"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    GATEHOUSE_ENV=production \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    HOME=/tmp
RUN groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid gatehouse --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gatehouse
# The wheels are bind-mounted from stage 1, so they never land in a layer of this image. The
# installers go afterwards: nothing installs at run time, and the base image's setuptools/pip
# would only add vulnerabilities to scan.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl \
    && python -m pip uninstall --yes pip setuptools wheel
WORKDIR /app
COPY --chown=root:root wsgi.py gunicorn.conf.py ./
COPY --chown=root:root migrations/ migrations/
COPY --chown=root:root webapp/ webapp/
COPY --chown=root:root jobs/ jobs/
COPY --chown=root:root observability/ observability/
# Bytecode compiled at build time: the root filesystem is read-only at run time. /var/lib/gatehouse
# is owned by the service user so that a volume mounted there (compose: the JWT key file) is too.
RUN python -m compileall -q /app \
    && install -d -o gatehouse -g gatehouse -m 0700 /tmp/metrics /var/lib/gatehouse
USER 10001:10001
EXPOSE 8000 9100
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]

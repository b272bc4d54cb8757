# One image for every service of the point-in-time scheduler. The service is chosen by the
# command (the console scripts of pyproject.toml):
#   scheduler setup | scheduler admin ...   operator CLI (migrations Job, control keys)
#   scheduler-ingest                        HTTP gateway, port 8080 (SCHEDULER_INGEST_PORT),
#                                           metrics on 9101 (SCHEDULER_INGEST_METRICS_PORT)
#   scheduler-bucketer                      metrics on 9102 (SCHEDULER_BUCKETER_METRICS_PORT)
#   scheduler-releaser                      metrics on 9103 (SCHEDULER_RELEASE_METRICS_PORT)
#   scheduler-dispatcher                    metrics on 9104 here (SCHEDULER_DISPATCH_METRICS_PORT)
# Build: docker build -t pit-scheduler:0.1.0 .   Run: docker run pit-scheduler:0.1.0 scheduler-ingest

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the locked dependencies and the project, into a self-contained venv ------------------
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libev-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY libs ./libs
COPY schemas ./schemas
COPY services ./services
RUN uv sync --frozen --no-dev --no-editable

# -- runtime: the venv only, a non-root user, no build tools --------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libev4 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 scheduler \
 && useradd --system --uid 10001 --gid scheduler --no-create-home --shell /usr/sbin/nologin scheduler
COPY --from=build /opt/venv /opt/venv
# The root file system may be read-only (the chart sets it): no bytecode writes, /tmp is a volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 9101 9102 9103 9104
# tini forwards SIGTERM to the service, which shuts down gracefully.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["scheduler", "--help"]

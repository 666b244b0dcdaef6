# kinvoke's images (docker-compose.yml builds them by target):
# - runtime: kinvoke installed without its dev extras in a virtualenv, no compilers or test tools,
#   running as the unprivileged user `kinvoke`; its local state under /var/lib/kinvoke (a volume).
# - examples: the example Restate Python SDK services (restate-sdk + hypercorn), also unprivileged.

FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY kafka_core ./kafka_core
COPY processor ./processor
COPY ingress_gateway ./ingress_gateway
COPY admin_api ./admin_api
COPY kinvoke ./kinvoke
RUN python -m venv /opt/kinvoke \
 && /opt/kinvoke/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/kinvoke/bin/pip install --no-cache-dir . \
 && /opt/kinvoke/bin/pip uninstall --yes pip


FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 kinvoke \
 && useradd --system --uid 10001 --gid kinvoke --home-dir /var/lib/kinvoke --create-home kinvoke
COPY --from=build /opt/kinvoke /opt/kinvoke
ENV PATH=/opt/kinvoke/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KINVOKE_STATE_DIR=/var/lib/kinvoke/state \
    KINVOKE_LOG_FORMAT=json
USER kinvoke
WORKDIR /var/lib/kinvoke
VOLUME ["/var/lib/kinvoke"]
EXPOSE 9070 8080
CMD ["kinvoke", "--help"]


FROM python:3.11-slim AS examples
RUN groupadd --system --gid 10001 kinvoke \
 && useradd --system --uid 10001 --gid kinvoke --create-home kinvoke \
 && pip install --no-cache-dir "restate-sdk>=1.2" "hypercorn>=0.16"
WORKDIR /app
COPY examples ./examples
USER kinvoke
EXPOSE 9080
CMD ["hypercorn", "examples.python.services:app", "--bind", "0.0.0.0:9080"]

#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then integration tests against a real broker and real
# Restate SDK deployments. Arguments go to pytest (e.g. `-m smoke`, a test file).
# The tests start one broker for the session: Apache Kafka (the jars ./scripts/setup.sh fetched),
# or the pip-only emulator with KINVOKE_TEST_BROKER=local; KINVOKE_TEST_BOOTSTRAP=host:port uses
# a broker that is already running instead.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Imports run one way (pyproject.toml [tool.importlinter]) and the code type-checks.
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

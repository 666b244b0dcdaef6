#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then integration tests against a real broker and real
# Restate SDK deployments (the tests start their own broker unless KINVOKE_TEST_BOOTSTRAP is set).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

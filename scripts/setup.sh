#!/usr/bin/env bash
# Creates .venv at the repo root and installs kinvoke with its test tools and the pip-only broker
# emulator, then fetches Apache Kafka (scripts/kafka/pom.xml) with Maven into .kinvoke/kafka-libs/
# for `kinvoke dev` and the tests, and a real schema registry (scripts/schema-registry/pom.xml) into
# .kinvoke/schema-registry/ for its test. Without Java >= 17 or Maven it says so in one line and installs
# the Python side only (then use `kinvoke dev --broker local`). `--require-kafka` (CI) makes that
# an error instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
REQUIRE_KAFKA=0
for arg in "$@"; do
  case "$arg" in
    --require-kafka) REQUIRE_KAFKA=1 ;;
    *) echo "usage: $0 [--require-kafka]" >&2; exit 2 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

# --- the restate CLI (integration tests check kinvoke's admin API with it) -------------------
# Pinned, into .kinvoke/restate-cli/ (ignored by git); no install scripts (the only one is a
# telemetry ping). Without npm the tests that need it are skipped.
RESTATE_CLI_VERSION=1.7.12
CLI_DIR=.kinvoke/restate-cli
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: no npm found — the restate CLI is not installed; tests/integration/test_sql_cli.py will be skipped" >&2
elif [ "$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$CLI_DIR/node_modules/@restatedev/restate/package.json" 2>/dev/null)" != "$RESTATE_CLI_VERSION" ]; then
  mkdir -p "$CLI_DIR"
  echo "setup: installing the restate CLI $RESTATE_CLI_VERSION into $CLI_DIR" >&2
  if ! SCARF_ANALYTICS=false npm install --prefix "$CLI_DIR" --save-exact --ignore-scripts --no-audit --no-fund \
    "@restatedev/restate@$RESTATE_CLI_VERSION" >"$CLI_DIR.log" 2>&1; then
    tail -n 20 "$CLI_DIR.log" >&2
    echo "setup: npm could not install the restate CLI (whole output in $CLI_DIR.log); its tests will be skipped" >&2
  fi
fi

# --- Node 22 and the Restate TypeScript SDK (tests/integration/test_typescript_sdk.py) ---------
# Pinned by tests/ts_services/package.json + package-lock.json (the npm package `node` brings the
# Node 22 binary: the SDK needs it, system Node 20 is too old), installed with `npm ci` into
# .kinvoke/node-sdk/ (ignored by git); package.json's allowScripts approves the one install script
# (`node`'s, which fetches the binary package). Skipped when that exact lock is already installed.
# Without npm the TypeScript tests are skipped (outside CI); `--require-kafka` (CI) makes it an error.
ts_sdk() {
  local src=tests/ts_services dir=.kinvoke/node-sdk want
  want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ -f "$dir/COMPLETE" ] && [ "$(cat "$dir/COMPLETE")" = "$want" ] && [ -x "$dir/node_modules/node/bin/node" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: no npm found — Node 22 and the Restate TypeScript SDK are not installed; tests/integration/test_typescript_sdk.py will be skipped" >&2
    return 1
  fi
  echo "setup: installing Node 22 and the Restate TypeScript SDK ($src/package-lock.json) into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  if ! npm ci --prefix "$dir" --no-audit --no-fund >"$dir.log" 2>&1; then
    tail -n 20 "$dir.log" >&2
    echo "setup: npm could not install Node 22 / the TypeScript SDK (whole output in $dir.log); tests/integration/test_typescript_sdk.py will be skipped" >&2
    return 1
  fi
  local v
  v=$("$dir/node_modules/node/bin/node" --version 2>/dev/null || true)
  if [[ "$v" != v22.* ]]; then
    echo "setup: $dir/node_modules/node/bin/node is '${v:-not runnable}', expected Node 22; tests/integration/test_typescript_sdk.py will be skipped" >&2
    return 1
  fi
  echo "$want" >"$dir/COMPLETE"
}
if ! ts_sdk && [ "$REQUIRE_KAFKA" = 1 ]; then
  echo "setup: --require-kafka (CI): the TypeScript SDK tests need Node 22 and the SDK installed" >&2
  exit 1
fi

# --- Java and Maven (Apache Kafka, the schema registry) --------------------------------------
# The same Java kinvoke/broker.py runs: $JAVA_HOME/bin/java if set, else java on PATH.
JAVA=java
if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
  JAVA="$JAVA_HOME/bin/java"
fi

no_kafka() {
  if [ "$REQUIRE_KAFKA" = 1 ]; then
    echo "setup: $1" >&2
    exit 1
  fi
  echo "setup: $1 — Apache Kafka not installed; use \`kinvoke dev --broker local\` and KINVOKE_TEST_BROKER=local" >&2
  exit 0
}

java_major() {
  # `java -version` prints e.g. `openjdk version "17.0.15" ...` or `java version "1.8.0_392"`.
  local v
  v=$("$JAVA" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)
  v=${v#1.}
  echo "${v%%[.+-]*}"
}

command -v "$JAVA" >/dev/null 2>&1 || no_kafka "no java found (Java >= 17 needed)"
major=$(java_major)
if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt 17 ]; then
  no_kafka "Java >= 17 needed, $JAVA is version '${major:-unknown}'"
fi

# Maven fetches the dependencies of pom $2 into $3 (with everything they pull in: `copy`) or
# unpacks them there (`unpack`), unless the files of exactly this pom are already there (COMPLETE
# holds the pom's checksum and is written last, so an interrupted download is redone); $5 is a
# file that must then be there. Fails (1) with the end of Maven's output.
fetch_pom() {
  local how=$1 pom=$2 dir=$3 what=$4 expect=$5 want goal
  want=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ -f "$dir/COMPLETE" ] && [ "$(cat "$dir/COMPLETE")" = "$want" ]; then
    return 0
  fi
  case "$how" in
    copy) goal=dependency:copy-dependencies ;;
    unpack) goal=dependency:unpack-dependencies ;;
  esac
  mkdir -p .kinvoke
  rm -rf "$dir.tmp"
  echo "setup: fetching $what ($pom) into $dir" >&2
  if ! mvn -B --no-transfer-progress -Dstyle.color=never -f "$pom" \
    "$goal" -DoutputDirectory="$PWD/$dir.tmp" >"$dir.log" 2>&1; then
    tail -n 30 "$dir.log" >&2
    echo "setup: Maven could not fetch $what (whole output in $dir.log)" >&2
    return 1
  fi
  # shellcheck disable=SC2086  # $expect may be a glob
  if ! ls "$dir.tmp"/$expect >/dev/null 2>&1; then
    echo "setup: Maven fetched $what without $expect (its output in $dir.log)" >&2
    return 1
  fi
  echo "$want" >"$dir.tmp/COMPLETE"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
}

# --- Apache Kafka ----------------------------------------------------------------------------
LIBS=.kinvoke/kafka-libs
if ! [ -f "$LIBS/COMPLETE" ] || [ "$(cat "$LIBS/COMPLETE")" != "$(sha256sum scripts/kafka/pom.xml | cut -d' ' -f1)" ]; then
  command -v mvn >/dev/null 2>&1 || no_kafka "no mvn found (Maven fetches the Kafka jars)"
fi
fetch_pom copy scripts/kafka/pom.xml "$LIBS" "Apache Kafka" 'kafka_2.13-*.jar' || exit 1

# --- the schema registry (tests/integration/test_schema_registry.py) ---------------------------
# Apicurio Registry (scripts/schema-registry/pom.xml), a real server of the Confluent Schema
# Registry API, unpacked into .kinvoke/schema-registry/. Without it that test is skipped (outside
# CI); `--require-kafka` (CI) makes a failure here an error.
REGISTRY=.kinvoke/schema-registry
if ! command -v mvn >/dev/null 2>&1 || ! fetch_pom unpack scripts/schema-registry/pom.xml "$REGISTRY" "Apicurio Registry" \
  'apicurio-registry-app-*-runner.jar'; then
  if [ "$REQUIRE_KAFKA" = 1 ]; then
    echo "setup: --require-kafka (CI): tests/integration/test_schema_registry.py needs the schema registry" >&2
    exit 1
  fi
  echo "setup: the schema registry is not installed; tests/integration/test_schema_registry.py will be skipped" >&2
fi

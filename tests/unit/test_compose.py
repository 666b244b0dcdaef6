"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine (the
development machines and CI have none; CI also runs `docker compose config` where a compose
binary exists): data kept in volumes, a host listener, restarts, healthchecks, a runtime image
without dev tools running unprivileged, processors with dynamic membership."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kinvoke.broker import KAFKA_VERSION
from schemas.settings import DEFAULT_MAX_RECORD_BYTES, KAFKA_ENV_PREFIX, Settings, topic_max_message_bytes

REPO = Path(__file__).resolve().parents[2]
KINVOKE_SERVICES = ("admin", "ingress", "processor")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())  # merge keys (<<) resolved
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path -> named volume (or host path)."""
    out = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if m:
            current = stages.setdefault(m.group(1), [])
        elif line.strip() and not line.lstrip().startswith("#"):
            current.append(line)
    return stages


def test_kafka_is_the_version_kinvoke_dev_runs(services: dict[str, dict[str, Any]]) -> None:
    pom = (REPO / "scripts" / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_kafka_keeps_its_data_and_has_an_internal_and_a_host_listener(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    kafka = services["kafka"]
    e = env(kafka)
    assert mounts(kafka)[e["KAFKA_LOG_DIRS"]] in compose["volumes"]
    listeners = dict(entry.split("://") for entry in e["KAFKA_LISTENERS"].split(","))
    advertised = dict(entry.split("://") for entry in e["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(entry.split(":") for entry in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols) == {"INTERNAL", "EXTERNAL", "CONTROLLER"}
    assert advertised == {"INTERNAL": "kafka:9092", "EXTERNAL": "localhost:9094"}
    assert e["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    assert e["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert "127.0.0.1:9094:9094" in kafka["ports"]  # the host reaches the EXTERNAL listener
    for name in KINVOKE_SERVICES + ("topics",):
        assert env(services[name])["KINVOKE_BOOTSTRAP_SERVERS"] == advertised["INTERNAL"]


def test_the_broker_takes_records_of_restates_32_mib_bodies(services: dict[str, dict[str, Any]]) -> None:
    """As kinvoke/broker.py: every topic, not only kinvoke's (which carry it as a topic config)."""
    limit = topic_max_message_bytes(DEFAULT_MAX_RECORD_BYTES)
    assert int(env(services["kafka"])["KAFKA_MESSAGE_MAX_BYTES"]) == limit


def test_processes_restart_and_report_their_health(services: dict[str, dict[str, Any]]) -> None:
    for name in (*KINVOKE_SERVICES, "kafka", "greeter"):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["topics"]["restart"] == "on-failure"  # a one-shot job: done once it succeeded
    assert "localhost:9092" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert "http://127.0.0.1:9070/health" in " ".join(services["admin"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/restate/health" in " ".join(services["ingress"]["healthcheck"]["test"])
    processor = env(services["processor"])
    port = processor["KINVOKE_PROCESSOR_HTTP_PORT"]
    assert processor["KINVOKE_PROCESSOR_HTTP_HOST"] == "0.0.0.0"  # scraped over the compose network
    assert f"http://127.0.0.1:{port}/health" in " ".join(services["processor"]["healthcheck"]["test"])
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in KINVOKE_SERVICES:
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_state_is_kept_in_a_volume(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    for name in ("admin", "processor"):
        state_dir = env(services[name])["KINVOKE_STATE_DIR"]
        volumes = mounts(services[name])
        holding = [target for target in volumes if state_dir.startswith(target.rstrip("/") + "/")]
        assert holding and volumes[holding[0]] in compose["volumes"], name


def test_processors_are_replicas_with_dynamic_membership(services: dict[str, dict[str, Any]]) -> None:
    processor = services["processor"]
    assert processor["deploy"]["replicas"] >= 2
    assert not any(name.startswith("processor-") for name in services)
    for service in services.values():
        assert "KINVOKE_PROCESSOR_INSTANCE_ID" not in env(service)


def test_every_kinvoke_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    known = {f"KINVOKE_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        for var in env(service):
            if var.startswith("KINVOKE_") and not var.startswith(KAFKA_ENV_PREFIX):
                assert var in known, f"{name}: {var} is not a kinvoke setting"


def test_images_are_built_from_dockerfile_stages(services: dict[str, dict[str, Any]]) -> None:
    stages = dockerfile_stages()
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
    for name in (*KINVOKE_SERVICES, "topics"):
        assert services[name]["build"]["target"] == "runtime"
    assert services["greeter"]["build"]["target"] == "examples"


def test_the_runtime_image_has_no_dev_tools_and_runs_unprivileged() -> None:
    stages = dockerfile_stages()
    assert {"build", "runtime", "examples"} <= set(stages)
    everything = "\n".join(line for lines in stages.values() for line in lines)
    assert "[dev]" not in everything and "-e " not in everything  # no dev extras, no editable install
    runtime = "\n".join(stages["runtime"])
    assert not re.search(r"pip install", runtime)  # built in `build`, only copied here
    assert "COPY --from=build /opt/kinvoke /opt/kinvoke" in runtime
    for stage in ("runtime", "examples"):
        users = [line.split()[1] for line in stages[stage] if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), stage
    examples = "\n".join(stages["examples"])
    assert "restate-sdk" in examples and "hypercorn" in examples


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".kinvoke", "tests"} <= ignored
    copied = {
        line.split()[1]
        for lines in dockerfile_stages().values()
        for line in lines
        if line.startswith("COPY ") and "--from" not in line
    }
    assert not copied & ignored, "the Dockerfile copies something .dockerignore leaves out"

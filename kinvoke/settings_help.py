"""What `--help` and `--version` say: the KINVOKE_* variables each command reads, generated from
`schemas/settings.py` (names, defaults, descriptions), so the help cannot drift from the code."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pydantic.fields import FieldInfo

from schemas.settings import Settings

ENV_PREFIX = "KINVOKE_"


def _fields(*names: str) -> tuple[str, ...]:
    """Settings fields by name, every field starting with a prefix given as `prefix*` (a new
    `processor_…` or `invoker_…` setting shows up in the processor's help by itself), minus the
    fields given as `-name`."""
    out: list[str] = []
    for name in names:
        if name.endswith("*"):
            out += [f for f in Settings.model_fields if f.startswith(name[:-1])]
        elif not name.startswith("-"):
            out.append(name)
    return tuple(f for f in dict.fromkeys(out) if f"-{f}" not in names)


# Every client of Kafka reads these.
_KAFKA = ("bootstrap_servers", "topic_prefix", "max_record_bytes", "kafka_*")
_LOGS = ("log_format", "log_level")
_LOCAL_STORES = ("state_dir", "changelog_delete_retention_ms")
_PROCESSOR = _fields(
    *_KAFKA,
    "partitions",
    "processor_*",
    "invoker_*",
    "schema_registry_*",
    "tracing_*",
    "request_identity_*",
    "default_*",
    *_LOCAL_STORES,
    "recovery_barrier",
    *_LOGS,
)
# The advertised URL is the admin's (its /version), the host and port both's (the default URL).
_INGRESS = _fields(*_KAFKA, "ingress_*", "-ingress_advertised_url", "default_*", "tracing_*", *_LOGS)
_ADMIN = _fields(
    *_KAFKA,
    "partitions",
    "admin_*",
    "ingress_host",
    "ingress_port",
    "ingress_advertised_url",
    "request_identity_*",
    *_LOCAL_STORES,
    *_LOGS,
)
_TOPICS_CREATE = _fields(
    *_KAFKA, "partitions", "replication_factor", "topic_configs", "changelog_delete_retention_ms", *_LOGS
)
_BROKER = _fields("broker*", *_LOGS)
_INSPECT = _fields(*_KAFKA, "schema_registry_*", *_LOGS)

# Command (as typed after `kinvoke`) -> the Settings fields it reads, itself or in its children.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    # `dev` runs all components and hands them its environment.
    "dev": _fields(*_BROKER, *_TOPICS_CREATE, *_ADMIN, *_INGRESS, *_PROCESSOR),
    "processor": _PROCESSOR,
    "ingress": _INGRESS,
    "admin": _ADMIN,
    "broker": _BROKER,
    "replay": _fields(*_KAFKA, "partitions", "schema_registry_*", *_LOGS),
    "topics create": _TOPICS_CREATE,
    "topics tail": _INSPECT,
}


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _default(info: FieldInfo) -> str:
    if info.default is None:
        return "unset"
    if isinstance(info.default, bool):
        return "1" if info.default else "0"
    return str(info.default)


def env_help(command: str) -> str:
    """The `--help` epilog of `command`: its KINVOKE_* variables with default and meaning."""
    fields = Settings.model_fields
    lines = ["environment (KINVOKE_* variables this command reads):"]
    for name in COMMAND_SETTINGS[command]:
        info = fields[name]
        lines.append(f"  {env_name(name)} (default: {_default(info)})")
        lines.append(f"      {info.description or ''}")
    return "\n".join(lines)


def package_version() -> str:
    try:
        return version("kinvoke")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def version_text() -> str:
    """kinvoke's version and the Restate versions it speaks (as the admin API's /version says)."""
    from admin_api.app import API_VERSIONS, SERVER_VERSION
    from admin_api.registration import MAX_DISCOVERABLE_VERSION, MIN_DISCOVERABLE_VERSION
    from processor.invoker.attempt import SERVER_MAX_PROTOCOL_VERSION, SERVER_MIN_PROTOCOL_VERSION

    return (
        f"kinvoke {package_version()}\n"
        f"Restate compatibility: server {SERVER_VERSION}, "
        f"admin API v{API_VERSIONS[0]}-v{API_VERSIONS[-1]}, "
        f"service protocol v{SERVER_MIN_PROTOCOL_VERSION}-v{SERVER_MAX_PROTOCOL_VERSION} "
        f"(deployments discovered: v{MIN_DISCOVERABLE_VERSION}-v{MAX_DISCOVERABLE_VERSION})"
    )

"""`kinvoke dev`: a broker, the topics, admin, ingress and one processor on this machine.

Safe to type twice: a lock file (`dev.lock` next to the broker's data dir, `.kinvoke/dev.lock` by
default) and a check that the broker, admin and ingress ports are free come before anything is
started, so a second `kinvoke dev` refuses in one line and leaves the first one alone. The
banner with the URLs is printed once everything answers: the broker, the admin API's `/health`,
the ingress's `/restate/health`, and the processor's consumer group holding every partition.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import structlog

from kafka_core.file_lock import FileLock, try_lock
from schemas.settings import Settings
from schemas.topics import Topics

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from kinvoke.broker import Broker

log = structlog.get_logger("kinvoke")
# A JVM starting on a loaded machine can take a while; a broker that dies fails at once anyway.
BROKER_START_TIMEOUT_S = 60.0
DEV_MAX_RESTARTS = 5  # per component within DEV_CRASH_WINDOW_S
DEV_CRASH_WINDOW_S = 60.0
# After this long without the banner, say once what is still missing (and keep waiting).
DEV_READY_WARN_S = 120.0
READY_POLL_S = 0.5
LOCK_NAME = "dev.lock"


def broker_kind(settings: Settings, args: argparse.Namespace) -> str:
    """`--broker` wins over KINVOKE_BROKER."""
    return str(getattr(args, "broker", None) or settings.broker)


def broker_data_dir(settings: Settings, kind: str) -> Path:
    """KINVOKE_BROKER_DATA_DIR if set, else one directory per broker kind (`.kinvoke/kafka` for
    Apache Kafka, `.kinvoke/broker` for the emulator): their storage has nothing in common."""
    from kinvoke.broker import DEFAULT_DATA_DIRS

    return Path(settings.broker_data_dir or DEFAULT_DATA_DIRS[kind])


def start_broker(settings: Settings, kind: str) -> Broker:
    """The broker of `kinvoke dev` / `kinvoke broker`, its log next to its data dir."""
    from kinvoke.broker import start_broker as _start

    data_dir = broker_data_dir(settings, kind)
    log_file = data_dir.parent / f"{data_dir.name}.log"
    what = "Apache Kafka" if kind == "kafka" else "the broker emulator (noida-db)"
    print(f"starting {what} on 127.0.0.1:{settings.broker_port} (log in {log_file})", flush=True)
    return _start(kind, data_dir, settings.broker_port, log_file, timeout_s=BROKER_START_TIMEOUT_S)


def lock_path(settings: Settings, kind: str) -> Path:
    """One `kinvoke dev` per directory of broker data (both brokers' defaults share `.kinvoke/`)."""
    return broker_data_dir(settings, kind).resolve().parent / LOCK_NAME


def take_lock(path: Path) -> FileLock | str:
    """The lock, or the line that says who holds it."""
    lock = try_lock(path)
    if lock is not None:
        return lock
    try:
        holder = path.read_text().strip()
    except OSError:
        holder = ""
    who = f"pid {holder}" if holder.isdigit() else "another process"
    return (
        f"another kinvoke dev ({who}) is running with {path.parent} (lock {path}); "
        "stop it first, or give this one another KINVOKE_BROKER_DATA_DIR"
    )


def port_free(host: str, port: int) -> bool:
    """Nothing listens on (host, port) and we could bind it (SO_REUSEADDR: TIME_WAIT is fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def taken_ports(settings: Settings, with_broker: bool) -> str | None:
    """The line naming the ports in use, or None when all are free."""
    wanted = [
        ("admin", settings.admin_host, settings.admin_port, "KINVOKE_ADMIN_PORT"),
        ("ingress", settings.ingress_host, settings.ingress_port, "KINVOKE_INGRESS_PORT"),
    ]
    if with_broker:
        wanted.insert(0, ("broker", "127.0.0.1", settings.broker_port, "KINVOKE_BROKER_PORT"))
    if settings.processor_http_port:
        host, port = settings.processor_http_host, settings.processor_http_port
        wanted.append(("processor", host, port, "KINVOKE_PROCESSOR_HTTP_PORT"))
    taken = [f"{what} {host}:{port} ({env})" for what, host, port, env in wanted if not port_free(host, port)]
    if not taken:
        return None
    ports = "port in use" if len(taken) == 1 else "ports in use"
    return f"{ports}: {', '.join(taken)}; stop what uses them or choose others"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class Readiness:
    """What is not serving yet, checked with short timeouts (the dev loop keeps supervising)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.Client(timeout=1.0)
        self._admin: AdminClient | None = None

    def close(self) -> None:
        """Before the broker stops: librdkafka's destroy of an admin client can block for good once
        its broker is gone (seen as `kinvoke dev` hanging after Ctrl-C)."""
        self.http.close()
        self._admin = None
        # Admin clients left in reference cycles (a future and its callbacks hold them) would
        # be destroyed by a later garbage collection, after the broker stopped: collect now.
        gc.collect()

    def _answers(self, url: str) -> bool:
        try:
            return self.http.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def missing(self) -> list[str]:
        from kafka_core.inspect import group_partitions, quiet_admin

        s = self.settings
        missing = []
        if not self._answers(f"http://{_local(s.admin_host)}:{s.admin_port}/health"):
            missing.append("the admin API (/health)")
        if not self._answers(f"http://{_local(s.ingress_host)}:{s.ingress_port}/restate/health"):
            missing.append("the ingress (/restate/health)")
        if self._admin is None:
            self._admin = quiet_admin(s)
        owned = group_partitions(self._admin, s.processor_group, Topics(s.topic_prefix).commands)
        if owned is None or not set(range(s.partitions)) <= owned:
            missing.append(f"the processor (group {s.processor_group} owning all {s.partitions} partitions)")
        return missing


def banner(settings: Settings, seconds: float) -> str:
    return (
        f"kinvoke dev: admin http://{settings.admin_host}:{settings.admin_port}  "
        f"ingress http://{settings.ingress_host}:{settings.ingress_port}  "
        f"processor http://{settings.processor_http_host}:{settings.processor_http_port}/metrics  "
        f"kafka {settings.bootstrap_servers}  ready in {seconds:.1f}s (Ctrl-C stops everything)"
    )


def run_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Broker + topics + admin + ingress + one processor; Ctrl-C stops all of it."""
    kind = broker_kind(settings, args)
    held = take_lock(lock_path(settings, kind))
    if isinstance(held, str):
        print(f"kinvoke dev: {held}", file=sys.stderr)
        return 1
    try:
        taken = taken_ports(settings, with_broker=not args.external_broker)
        if taken is not None:
            print(f"kinvoke dev: {taken}", file=sys.stderr)
            return 1
        if not settings.processor_http_port:
            # One port for the processor's /metrics, /tasks and /health for the whole run (kept
            # across its restarts), so the banner can name it.
            settings = settings.model_copy(
                update={"processor_http_port": free_port(settings.processor_http_host)}
            )
        return _run(settings, args, kind)
    finally:
        held.release()


def _run(settings: Settings, args: argparse.Namespace, kind: str) -> int:
    from confluent_kafka import KafkaException

    from kafka_core.inspect import InspectError, check_reachable, kafka_message
    from kafka_core.kafka import create_topics
    from kinvoke.broker import BrokerError, log_tail

    started = time.monotonic()
    broker: Broker | None = None
    code = 0
    env = dict(os.environ)
    env["KINVOKE_PROCESSOR_HTTP_PORT"] = str(settings.processor_http_port)
    if not args.external_broker:
        try:
            broker = start_broker(settings, kind)
        except BrokerError as e:
            print(f"kinvoke dev: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C while the broker starts (it is stopped already)
            return 130
        env["KINVOKE_BOOTSTRAP_SERVERS"] = broker.bootstrap
        env["KINVOKE_BROKER"] = kind
        if kind == "local":
            # The processor works around a quirk of the emulator with this (see processor/).
            env["KINVOKE_RECOVERY_BARRIER"] = "1"
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap, "broker": kind})
    children: dict[str, subprocess.Popen[bytes]] = {}
    crashes: dict[str, list[float]] = {}
    stop = {"now": False}

    def spawn(component: str) -> None:
        children[component] = subprocess.Popen([sys.executable, "-m", "kinvoke.cli", component], env=env)

    def handler(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    readiness = Readiness(settings)
    try:
        try:
            if broker is None:
                check_reachable(settings)
            create_topics(settings)
        except KafkaException as e:
            print(f"kinvoke dev: cannot create the topics: {kafka_message(e)}", file=sys.stderr)
            return 1
        except (InspectError, RuntimeError) as e:
            print(f"kinvoke dev: cannot create the topics: {e}", file=sys.stderr)
            return 1
        for component in ("admin", "ingress", "processor"):
            spawn(component)
        ready, warned, next_check = False, False, 0.0
        while not stop["now"]:
            for component, child in list(children.items()):
                if child.poll() is None or stop["now"]:
                    continue
                # A component that stops by itself is restarted, as a supervisor would; one that
                # keeps crashing stops everything, with a non-zero exit.
                now = time.monotonic()
                recent = [t for t in crashes.get(component, []) if now - t < DEV_CRASH_WINDOW_S] + [now]
                crashes[component] = recent
                log.error("dev.component_exited", component=component, pid=child.pid, code=child.returncode)
                if len(recent) > DEV_MAX_RESTARTS:
                    print(
                        f"kinvoke dev: {component} exited {len(recent)} times "
                        f"in {DEV_CRASH_WINDOW_S:.0f}s; stopping"
                    )
                    stop["now"] = True
                    code = 1
                else:
                    log.info("dev.component_restarting", component=component, restarts=len(recent))
                    spawn(component)
            if broker is not None and not broker.is_running():
                log.error("dev.broker_exited", log_file=str(broker.log_file))
                print(f"kinvoke dev: the broker exited; its log ends with:\n{log_tail(broker.log_file)}")
                stop["now"] = True
                code = 1
            if not ready and not stop["now"] and time.monotonic() >= next_check:
                missing = readiness.missing()
                elapsed = time.monotonic() - started
                if not missing:
                    ready = True
                    print(banner(settings, elapsed), flush=True)
                elif elapsed > DEV_READY_WARN_S and not warned:
                    warned = True
                    print(
                        f"kinvoke dev: not ready after {elapsed:.0f}s, waiting for: {'; '.join(missing)}",
                        flush=True,
                    )
                next_check = time.monotonic() + READY_POLL_S
            time.sleep(0.2)
    finally:
        readiness.close()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if broker is not None:
            broker.stop()
    return code

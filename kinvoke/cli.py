"""`kinvoke` command line: wires the packages together, nothing more."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kinvoke.logging import configure_logging
from schemas.settings import Settings

if TYPE_CHECKING:
    from kinvoke.broker import Broker

log = structlog.get_logger("kinvoke")
# A JVM starting on a loaded machine can take a while; a broker that dies fails at once anyway.
BROKER_START_TIMEOUT_S = 60.0
DEV_MAX_RESTARTS = 5  # per component within DEV_CRASH_WINDOW_S
DEV_CRASH_WINDOW_S = 60.0


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from kafka_core.kafka import create_topics

    created = create_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _cmd_processor(settings: Settings, args: argparse.Namespace) -> int:
    from processor.service import run_processor

    return run_processor(settings)


def _cmd_ingress(settings: Settings, args: argparse.Namespace) -> int:
    from ingress_gateway.server import run_ingress

    return run_ingress(settings)


def _cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from admin_api.server import run_admin

    return run_admin(settings)


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from processor.replay import run

    partitions = args.partition if args.partition else list(range(settings.partitions))
    return run(settings, partitions, args.verify)


def _broker_kind(settings: Settings, args: argparse.Namespace) -> str:
    """`--broker` wins over KINVOKE_BROKER."""
    return args.broker or settings.broker


def _broker_data_dir(settings: Settings, kind: str) -> Path:
    """KINVOKE_BROKER_DATA_DIR if set, else one directory per broker kind (`.kinvoke/kafka` for
    Apache Kafka, `.kinvoke/broker` for the emulator): their storage has nothing in common."""
    from kinvoke.broker import DEFAULT_DATA_DIRS

    return Path(settings.broker_data_dir or DEFAULT_DATA_DIRS[kind])


def _start_broker(settings: Settings, kind: str) -> Broker:
    """The broker of `kinvoke dev` / `kinvoke broker`, its log next to its data dir."""
    from kinvoke.broker import start_broker

    data_dir = _broker_data_dir(settings, kind)
    log_file = data_dir.parent / f"{data_dir.name}.log"
    what = "Apache Kafka" if kind == "kafka" else "the broker emulator (noida-db)"
    print(f"starting {what} on 127.0.0.1:{settings.broker_port} (log in {log_file})", flush=True)
    return start_broker(kind, data_dir, settings.broker_port, log_file, timeout_s=BROKER_START_TIMEOUT_S)


def _cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from kinvoke.broker import BrokerError

    kind = _broker_kind(settings, args)
    try:
        broker = _start_broker(settings, kind)
    except BrokerError as e:
        print(f"kinvoke broker: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while the broker starts (it is stopped already)
        return 130
    print(f"broker listening on {broker.bootstrap} (data in {broker.data_dir}); Ctrl-C stops it", flush=True)
    try:
        _wait_for_signal()
    finally:
        broker.stop()
    return 0


def _wait_for_signal() -> None:
    stop = {"now": False}

    def handler(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["now"]:
        time.sleep(0.2)


def _cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Broker + topics + admin + ingress + one processor; Ctrl-C stops all of it."""
    from kafka_core.kafka import create_topics
    from kinvoke.broker import BrokerError, log_tail

    broker: Broker | None = None
    code = 0
    env = dict(os.environ)
    if not args.external_broker:
        kind = _broker_kind(settings, args)
        try:
            broker = _start_broker(settings, kind)
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
    try:
        create_topics(settings)
        for component in ("admin", "ingress", "processor"):
            spawn(component)
        print(
            f"kinvoke dev: admin http://{settings.admin_host}:{settings.admin_port}  "
            f"ingress http://{settings.ingress_host}:{settings.ingress_port}  "
            f"kafka {settings.bootstrap_servers}  (Ctrl-C stops everything)",
            flush=True,
        )
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
            time.sleep(0.2)
    finally:
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


def _broker_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=["kafka", "local"],
        help="kafka: Apache Kafka from the jars ./scripts/setup.sh fetched (default); local: the pip-only "
        "emulator noida-db, for machines without Java (default: KINVOKE_BROKER, else kafka)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinvoke", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="start a Kafka broker, admin, ingress and a processor")
    _broker_flag(dev)
    dev.add_argument(
        "--external-broker", action="store_true", help="use KINVOKE_BOOTSTRAP_SERVERS, start no broker"
    )
    dev.set_defaults(func=_cmd_dev)
    sub.add_parser("processor", help="run a partition processor").set_defaults(func=_cmd_processor)
    sub.add_parser("ingress", help="run the HTTP ingress").set_defaults(func=_cmd_ingress)
    sub.add_parser("admin", help="run the admin API").set_defaults(func=_cmd_admin)
    broker = sub.add_parser("broker", help="run a local Kafka broker (Apache Kafka, or --broker local)")
    _broker_flag(broker)
    broker.set_defaults(func=_cmd_broker)
    replay = sub.add_parser("replay", help="re-run the commands log through the state machine (debugging)")
    replay.add_argument(
        "--partition", type=int, action="append", help="partition(s) to replay (default: all)"
    )
    replay.add_argument("--verify", action="store_true", help="compare the replayed state with the changelog")
    replay.set_defaults(func=_cmd_replay)
    topics = sub.add_parser("topics", help="manage kinvoke's topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    topics_sub.add_parser("create", help="create the topics (idempotent)").set_defaults(func=_cmd_topics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return int(args.func(settings, args) or 0)


if __name__ == "__main__":
    sys.exit(main())

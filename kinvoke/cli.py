"""`kinvoke` command line: wires the packages together, nothing more."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from kinvoke.logging import configure_logging
from schemas.settings import Settings

log = structlog.get_logger("kinvoke")


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from kafka_core.kafka import create_topics

    created = create_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _cmd_processor(settings: Settings, args: argparse.Namespace) -> int:
    from processor.service import run_processor

    run_processor(settings)
    return 0


def _cmd_ingress(settings: Settings, args: argparse.Namespace) -> int:
    from ingress_gateway.server import run_ingress

    run_ingress(settings)
    return 0


def _cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from admin_api.server import run_admin

    run_admin(settings)
    return 0


def _cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from processor.replay import run

    partitions = args.partition if args.partition else list(range(settings.partitions))
    return run(settings, partitions, args.verify)


def _cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from kinvoke.broker import LocalBroker

    broker = LocalBroker(data_dir=Path(settings.broker_data_dir), port=settings.broker_port).start()
    print(f"broker listening on {broker.bootstrap} (data in {settings.broker_data_dir}); Ctrl-C stops it")
    _wait_for_signal()
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
    """Local broker + topics + admin + ingress + one processor; Ctrl-C stops all of it."""
    from kafka_core.kafka import create_topics
    from kinvoke.broker import LocalBroker

    broker: LocalBroker | None = None
    if not args.external_broker:
        Path(settings.broker_data_dir).mkdir(parents=True, exist_ok=True)
        broker = LocalBroker(
            data_dir=Path(settings.broker_data_dir),
            port=settings.broker_port,
            log_file=Path(settings.broker_data_dir).parent / "broker.log",
        ).start()
        os.environ["KINVOKE_BOOTSTRAP_SERVERS"] = broker.bootstrap
        settings = Settings()
    create_topics(settings)
    children: list[subprocess.Popen[bytes]] = []
    for component in ("admin", "ingress", "processor"):
        children.append(subprocess.Popen([sys.executable, "-m", "kinvoke.cli", component]))
    print(
        f"kinvoke dev: admin http://{settings.admin_host}:{settings.admin_port}  "
        f"ingress http://{settings.ingress_host}:{settings.ingress_port}  "
        f"kafka {settings.bootstrap_servers}  (Ctrl-C stops everything)",
        flush=True,
    )
    stop = {"now": False}

    def handler(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["now"]:
            for child in children:
                if child.poll() is not None:
                    log.error("dev.component_exited", pid=child.pid, code=child.returncode)
                    stop["now"] = True
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if broker is not None:
            broker.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinvoke", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="start the local broker, admin, ingress and a processor")
    dev.add_argument(
        "--external-broker", action="store_true", help="use KINVOKE_BOOTSTRAP_SERVERS, start no broker"
    )
    dev.set_defaults(func=_cmd_dev)
    sub.add_parser("processor", help="run a partition processor").set_defaults(func=_cmd_processor)
    sub.add_parser("ingress", help="run the HTTP ingress").set_defaults(func=_cmd_ingress)
    sub.add_parser("admin", help="run the admin API").set_defaults(func=_cmd_admin)
    sub.add_parser("broker", help="run the local Kafka-compatible broker").set_defaults(func=_cmd_broker)
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

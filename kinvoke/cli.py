"""`kinvoke` command line: wires the packages together, nothing more."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from kinvoke.logging import configure_logging
from kinvoke.settings_help import env_help
from schemas.settings import Settings


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from kafka_core.inspect import check_reachable
    from kafka_core.kafka import create_topics

    check_reachable(settings)
    created = create_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from kafka_core.inspect import TailOptions, tail

    options = TailOptions(
        partitions=args.partition,
        from_beginning=args.from_beginning,
        last=args.last,
        max_records=args.max_records,
        follow=args.follow,
    )
    stop = {"now": False}
    if args.follow:  # Ctrl-C or SIGTERM ends a follow cleanly (the consumer is closed)

        def handler(*_: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    for record in tail(settings, args.topic, options, stop=lambda: stop["now"]):
        line = json.dumps(record.to_json(), ensure_ascii=False) if args.json else record.render()
        print(line, flush=True)
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
    from kafka_core.inspect import InspectError
    from processor.replay import run, run_invocation

    if args.invocation is not None:
        if args.partition or args.verify:
            raise InspectError(
                "--invocation goes without --partition and --verify (its id names its partition)"
            )
        return run_invocation(settings, args.invocation, as_json=args.json)
    partitions = args.partition if args.partition else list(range(settings.partitions))
    return run(settings, partitions, args.verify)


def _cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    from kinvoke.broker import BrokerError
    from kinvoke.dev import broker_kind, start_broker

    kind = broker_kind(settings, args)
    try:
        broker = start_broker(settings, kind)
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
    from kinvoke.dev import run_dev

    return run_dev(settings, args)


class _VersionAction(argparse.Action):
    """`--version`, computed only when asked (it imports the components for their versions)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print kinvoke's and the Restate API versions")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from kinvoke.settings_help import version_text

        print(version_text())
        parser.exit()


def _broker_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=["kafka", "local"],
        help="kafka: Apache Kafka from the jars ./scripts/setup.sh fetched (default); local: the pip-only "
        "emulator noida-db, for machines without Java (default: KINVOKE_BROKER, else kafka)",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str, env: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with the KINVOKE_* variables it reads."""
    return sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=env_help(env or name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinvoke",
        description="kinvoke: durable execution with Restate's protocols, on Kafka. "
        "`kinvoke <command> --help` lists a command's options and the KINVOKE_* variables it reads.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = _command(sub, "dev", "start a Kafka broker, admin, ingress and a processor (Ctrl-C stops them)")
    _broker_flag(dev)
    dev.add_argument(
        "--external-broker", action="store_true", help="use KINVOKE_BOOTSTRAP_SERVERS, start no broker"
    )
    dev.set_defaults(func=_cmd_dev)
    _command(sub, "processor", "run a partition processor").set_defaults(func=_cmd_processor)
    _command(sub, "ingress", "run the HTTP ingress").set_defaults(func=_cmd_ingress)
    _command(sub, "admin", "run the admin API").set_defaults(func=_cmd_admin)
    broker = _command(sub, "broker", "run a local Kafka broker (Apache Kafka, or --broker local)")
    _broker_flag(broker)
    broker.set_defaults(func=_cmd_broker)

    replay = _command(sub, "replay", "re-run the commands log through the state machine (debugging)")
    replay.add_argument(
        "--partition", type=int, action="append", help="partition(s) to replay (default: all); repeatable"
    )
    replay.add_argument("--verify", action="store_true", help="compare the replayed state with the changelog")
    replay.add_argument(
        "--invocation",
        metavar="ID",
        help="print the timeline of one invocation (inv_…): its commands, journal entries, attempt "
        "outcomes and statuses, from the partition its id names",
    )
    replay.add_argument("--json", action="store_true", help="with --invocation: one JSON object per command")
    replay.set_defaults(func=_cmd_replay)

    topics = sub.add_parser(
        "topics",
        help="kinvoke's topics: create them, read them",
        description="kinvoke's topics: `kinvoke topics create --help` and `kinvoke topics tail --help` "
        "list their options and KINVOKE_* variables",
    )
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    _command(topics_sub, "create", "create the topics (idempotent)", "topics create").set_defaults(
        func=_cmd_topics
    )
    tail = _command(
        topics_sub, "tail", "print the records of a kinvoke topic, decoded for humans", "topics tail"
    )
    tail.add_argument(
        "topic", help="commands, changelog, results, metadata or commands.dlq (the prefix may be given too)"
    )
    tail.add_argument("--from-beginning", action="store_true", help="start at each partition's first record")
    tail.add_argument(
        "--last",
        type=int,
        default=10,
        metavar="N",
        help="without --from-beginning: start N offsets before each partition's end (default 10)",
    )
    tail.add_argument("--partition", type=int, action="append", help="partition(s) to read (default: all)")
    tail.add_argument("--max", type=int, dest="max_records", metavar="N", help="stop after N records")
    tail.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new records (Ctrl-C stops) instead of stopping at the end",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per record")
    tail.set_defaults(func=_cmd_tail)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        return int(args.func(settings, args) or 0)
    except BrokenPipeError:  # `kinvoke topics tail … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 0
    except Exception as e:
        from kafka_core.inspect import InspectError, kafka_message
        from kafka_core.request_identity import RequestIdentityError

        # The debugging tools' expected failures (broker down, unknown topic, partition or id)
        # and a bad request identity key file at start-up are one line on stderr, not a traceback.
        name = " ".join(filter(None, [args.command, getattr(args, "topics_command", None)]))
        if isinstance(e, (InspectError, RequestIdentityError)):
            print(f"kinvoke {name}: {e}", file=sys.stderr)
            return 1
        from confluent_kafka import KafkaException

        if isinstance(e, KafkaException):
            print(f"kinvoke {name}: Kafka error: {kafka_message(e)}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

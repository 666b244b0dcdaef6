"""`kinvoke replay`: run the `commands` log through the state machine again, offline.

The state machine is a pure function of the log, so replaying a partition's commands from the
beginning must rebuild exactly what the changelog holds. `replay` prints what each command did
(as JSON lines), and with `verify` compares the rebuilt state with the changelog topic.

`replay --invocation <id>` is the same replay seen from one invocation: its timeline, i.e. every
command that concerned it with the journal entries it produced, the attempts' outcomes and the
status it left, read from the log alone (the id names the partition: schemas/partitioner.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka_core.inspect import (
    InspectError,
    check_partitions,
    content,
    decode_frame,
    decode_value,
    iso,
    partition_count,
)
from kafka_core.kafka import read_to_end
from kafka_core.schema_registry import RegistryUnavailable
from processor import state_machine
from processor.decoding import decoder_for
from processor.state_machine import (
    InvokeAttempt,
    ProduceCommand,
    ScheduleTimer,
    SendAccepted,
    SendResult,
    StepResult,
)
from processor.storage import PartitionStore
from processor.validation import rejection
from schemas import changelog, codec
from schemas.ids import InvalidId, InvocationId
from schemas.partitioner import partition_of
from schemas.records import (
    AttemptEnded,
    Barrier,
    Command,
    Failure,
    InvocationStatus,
    Invoke,
    JournalEntry,
    ManageInvocation,
    OperateInvocation,
    PatchState,
    Success,
)
from schemas.settings import Settings
from schemas.topics import Topics


@dataclass
class ReplayReport:
    partition: int
    commands: int = 0
    undecodable: int = 0
    store: PartitionStore = field(init=False)
    latest: dict[str, bytes | None] = field(default_factory=dict)  # changelog key -> last value written

    def __post_init__(self) -> None:
        self.store = PartitionStore(self.partition)


def _describe(
    offset: int, command: Command, writes: list[tuple[str, bytes | None]], actions: list[Any]
) -> dict:
    body = command.body
    out: dict[str, Any] = {
        "offset": offset,
        "timestamp_ms": command.timestamp_ms,
        "command": type(body).__name__,
    }
    if isinstance(body, Barrier):
        out["owner"] = body.owner
        return out
    if isinstance(body, PatchState):
        out["object"] = f"{body.service}/{body.key}"
    else:
        out["invocation_id"] = body.invocation_id
    if isinstance(body, Invoke):
        out["target"] = str(body.target)
    if isinstance(body, ManageInvocation | OperateInvocation):
        out["operation"] = body.operation.value
    if isinstance(body, AttemptEnded):
        out["attempt"] = body.attempt
        out["outcome"] = type(body.outcome).__name__
        out["new_entries"] = len(body.new_entries)
    out["changelog"] = [k for k, _ in writes]
    out["actions"] = [
        f"invoke attempt {a.attempt}" if isinstance(a, InvokeAttempt) else "send result"
        for a in actions
        if isinstance(a, InvokeAttempt | SendResult)
    ]
    return out


@dataclass
class Applied:
    """One record of `commands` after replay: the command and what it did, or why it was skipped."""

    offset: int
    raw: bytes
    command: Command | None = None
    step: StepResult | None = None
    skipped: dict[str, str] | None = None  # {"undecodable": why} or {"dead_lettered": why}


def apply_records(
    report: ReplayReport,
    records: Iterable[tuple[int, bytes | None]],
    num_partitions: int,
    decode: Callable[[bytes], Command] = Command.decode,
) -> Iterator[Applied]:
    """Apply `records` ((offset, value) of the partition's commands, in order) to `report.store`,
    skipping what the processor dead-lettered the same way it did. `decode` reads both framings
    when it has the schema registry (processor.decoding)."""
    for offset, value in records:
        raw = value or b""
        try:
            command = decode(raw)
        except (codec.DecodeError, ValueError) as e:
            report.undecodable += 1
            yield Applied(offset, raw, skipped={"undecodable": str(e)})
            continue
        # What the processor dead-lettered changed nothing: skip it the same way.
        reason = rejection(command, report.partition, num_partitions)
        if reason is not None:
            report.undecodable += 1
            yield Applied(offset, raw, command, skipped={"dead_lettered": reason})
            continue
        try:
            step = state_machine.apply(report.store, command)
        except Exception as e:  # noqa: BLE001 - the processor dead-lettered it after a rollback
            report.store.kv.rollback()
            report.store.drop_caches()
            report.undecodable += 1
            yield Applied(
                offset, raw, command, skipped={"dead_lettered": f"the state machine failed on it: {e!r}"}
            )
            continue
        report.store.kv.commit()
        report.commands += 1
        for key, written in step.writes:
            report.latest[key] = written
        yield Applied(offset, raw, command, step)


def _records(settings: Settings, partition: int) -> Iterator[tuple[int, bytes | None]]:
    for msg in read_to_end(settings, Topics(settings.topic_prefix).commands, [partition]):
        yield msg.offset() or 0, msg.value()


def replay_partition(settings: Settings, partition: int) -> Iterator[tuple[dict, ReplayReport]]:
    """Apply every committed command of `partition`; yields a description per command."""
    report = ReplayReport(partition)
    decode = decoder_for(settings).decode_fetching
    for applied in apply_records(report, _records(settings, partition), settings.partitions, decode):
        if applied.skipped is not None:
            yield {"offset": applied.offset, **applied.skipped}, report
            continue
        assert applied.command is not None and applied.step is not None
        yield _describe(applied.offset, applied.command, applied.step.writes, applied.step.actions), report
    if report.commands == 0 and report.undecodable == 0:
        yield {"offset": None, "empty": True}, report


def changelog_latest(settings: Settings, partition: int) -> dict[str, bytes | None]:
    latest: dict[str, bytes | None] = {}
    for msg in read_to_end(settings, Topics(settings.topic_prefix).changelog, [partition]):
        latest[(msg.key() or b"").decode()] = msg.value()
    return latest


def verify(settings: Settings, partition: int) -> list[str]:
    """Differences between the replayed state and the changelog (empty: they agree)."""
    reports = [report for _, report in replay_partition(settings, partition)]
    report = reports[-1]
    stored = changelog_latest(settings, partition)
    problems = []
    for key in sorted(set(report.latest) | set(stored)):
        if report.latest.get(key) != stored.get(key):
            problems.append(f"partition {partition}: {key} differs between replay and changelog")
    return problems


def run(settings: Settings, partitions: list[int], check: bool) -> int:
    try:
        return _run(settings, partitions, check)
    except RegistryUnavailable as e:
        raise InspectError(str(e)) from None


def _run(settings: Settings, partitions: list[int], check: bool) -> int:
    topic = Topics(settings.topic_prefix).commands
    check_partitions(topic, partition_count(settings, topic), partitions)
    if check:
        problems = [p for part in partitions for p in verify(settings, part)]
        for p in problems:
            print(p)
        verdict = "DIFFERS" if problems else "OK, identical to the changelog"
        print(f"replay of partitions {partitions}: {verdict}")
        return 1 if problems else 0
    for part in partitions:
        for line, _ in replay_partition(settings, part):
            print(json.dumps({"partition": part, **line}))
    return 0


# -- one invocation's timeline ----------------------------------------------------------------


def _concerns(invocation_id: str, applied: Applied) -> bool:
    """The command is about the invocation, or changed its status or journal (an object lock
    handed over by another invocation's end, say)."""
    body = applied.command.body if applied.command is not None else None
    if body is not None and getattr(body, "invocation_id", None) == invocation_id:
        return True
    status = changelog.status_key(invocation_id)
    journal = changelog.journal_key(invocation_id, 0)[: -len("0000000000")]
    writes = applied.step.writes if applied.step is not None else []
    return any(key == status or key.startswith(journal) for key, _ in writes)


def _result(result: Success | Failure | None) -> dict[str, Any] | None:
    if isinstance(result, Success):
        return {"value": content(result.value)}
    if isinstance(result, Failure):
        return {"failure": {"code": result.code, "message": result.message}}
    return None


def _status(status: InvocationStatus) -> dict[str, Any]:
    out: dict[str, Any] = {"phase": status.phase.value, "attempt": status.attempt}
    if status.retry_count:
        out["retry_count"] = status.retry_count
    if status.next_retry_at_ms is not None:
        out["next_retry_at"] = iso(status.next_retry_at_ms)
    if status.waiting is not None:
        out["waiting"] = {k: v for k, v in status.waiting.model_dump(mode="json").items() if v}
    if status.result is not None:
        out["result"] = _result(status.result)
    out["journal_length"] = status.journal_length
    return out


def _action(action: Any, invocation_id: str) -> str | None:
    if isinstance(action, InvokeAttempt):
        when = f" at {iso(action.not_before_ms)}" if action.not_before_ms else ""
        who = "" if action.invocation_id == invocation_id else f" of {action.invocation_id}"
        return f"run attempt {action.attempt}{who}{when}"
    if isinstance(action, SendResult):
        return f"publish the result of {action.result.invocation_id} on results"
    if isinstance(action, SendAccepted):
        return f"answer {type(action.accepted).__name__} on results"
    if isinstance(action, ProduceCommand):
        body = action.command.body
        return f"send {type(body).__name__} to {getattr(body, 'invocation_id', '?')}"
    if isinstance(action, ScheduleTimer):
        return f"timer {action.timer.completion_id} at {iso(action.timer.wake_up_at_ms)}"
    return None  # e.g. notifications to a running attempt: no news for a reader


def timeline(
    records: Iterable[tuple[int, bytes | None]],
    invocation_id: str,
    partition: int,
    num_partitions: int,
    decode: Callable[[bytes], Command] = Command.decode,
) -> list[dict[str, Any]]:
    """The invocation's events from its partition's `commands` records ((offset, value), in
    order): each command that concerned it, with its decoded content, the journal entries it
    appended, the status it left and what it asked for next."""
    report = ReplayReport(partition)
    events: list[dict[str, Any]] = []
    for applied in apply_records(report, records, num_partitions, decode):
        if not _concerns(invocation_id, applied):
            continue
        assert applied.command is not None
        kind, details = decode_value(applied.raw)
        details.pop("timestamp", None)
        details.pop("new_entries", None)  # shown as the journal entries they became
        event: dict[str, Any] = {
            "offset": applied.offset,
            "at": iso(applied.command.timestamp_ms),
            "command": kind,
            "details": details,
        }
        if applied.skipped is not None:
            event.update(applied.skipped)
            events.append(event)
            continue
        assert applied.step is not None
        entries: list[dict[str, Any]] = []
        status: dict[str, Any] | None = None
        for key, value in applied.step.writes:
            try:
                parsed = changelog.parse_key(key)
            except ValueError:  # a kind of record this version does not know
                continue
            if parsed.invocation_id != invocation_id:
                continue
            if parsed.kind == changelog.JOURNAL:
                if value is None:
                    entries.append({"index": parsed.index, "deleted": True})
                else:
                    entry = JournalEntry.decode(value)
                    entries.append({"index": entry.index, **decode_frame(entry.frame)})
            elif parsed.kind == changelog.STATUS:
                status = {"purged": True} if value is None else _status(InvocationStatus.decode(value))
        if entries:
            event["journal"] = entries
        if status is not None:
            event["status"] = status
        actions = [a for a in (_action(x, invocation_id) for x in applied.step.actions) if a]
        if actions:
            event["next"] = actions
        if not applied.step.writes and not actions:
            event["effect"] = "none (a stale or repeated command)"
        events.append(event)
    return events


def _inline(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _headline(event: dict[str, Any], invocation_id: str) -> str:
    kind, d = event["command"], event["details"]
    of = "" if d.get("invocation_id") in (None, invocation_id) else f" of {d['invocation_id']}"
    if kind == "Invoke":
        target = d.get("target") or {}
        name = "/".join(str(target[k]) for k in ("service", "key", "handler") if target.get(k) is not None)
        by = d.get("invoked_by") or {}
        origin = by.get("kind", "?") + (f" {by['invocation_id']}" if by.get("invocation_id") else "")
        line = f"Invoke {name} by {origin}, argument {_inline(d.get('argument'))}"
        if d.get("idempotency_key"):
            line += f", idempotency key {d['idempotency_key']!r}"
        return line + of
    if "attempt" in d and "outcome" in d:
        outcome = d["outcome"] or {}
        what = outcome.get("type")
        if what == "AttemptFailed":
            said = f"failed [{outcome.get('code')}] {outcome.get('message')}"
        elif what == "Suspended":
            waits = {k: v for k, v in outcome.items() if k != "type" and v}
            said = f"suspended, waiting for {_inline(waits)}"
        else:
            said = "ended"
        return f"{kind} attempt {d['attempt']}{of} on {d.get('deployment_id')}: {said}"
    if "attempt" in d:
        return f"{kind} attempt {d['attempt']}{of}"
    rest = {k: v for k, v in d.items() if k != "invocation_id"}
    return f"{kind}{of} {_inline(rest)}" if rest else f"{kind}{of}"


def _status_line(status: dict[str, Any]) -> str:
    if status.get("purged"):
        return "purged"
    parts = [f"attempt {status['attempt']}"]
    if status.get("retry_count"):
        parts.append(f"{status['retry_count']} failed")
    if status.get("next_retry_at"):
        parts.append(f"next attempt at {status['next_retry_at']}")
    if status.get("waiting"):
        parts.append(f"waiting for {_inline(status['waiting'])}")
    parts.append(f"{status['journal_length']} journal entries")
    line = f"{status['phase']} ({', '.join(parts)})"
    if status.get("result") is not None:
        line += f": {_inline(status['result'])}"
    return line


def render_timeline(invocation_id: str, topic: str, partition: int, events: list[dict[str, Any]]) -> str:
    """The timeline for a terminal: a line per command, its consequences indented below it."""
    lines = [f"{invocation_id}: {len(events)} commands on {topic}[{partition}]"]
    last_trace: list[str] = []
    for event in events:
        lines.append(f"{event['at']}  @{event['offset']}  {_headline(event, invocation_id)}")
        for reason in ("dead_lettered", "undecodable"):
            if reason in event:
                lines.append(f"    {reason.replace('_', ' ')}: {event[reason]}")
        outcome = event["details"].get("outcome") or {}
        trace = (outcome.get("stacktrace") or "").strip().splitlines()
        if trace and trace == last_trace:
            lines.append("    stacktrace: the same as above")
        elif trace:
            lines.append("    stacktrace (last lines):" if len(trace) > 6 else "    stacktrace:")
            lines.extend(f"      {t}" for t in trace[-6:])
            last_trace = trace
        for entry in event.get("journal", []):
            fields = {k: v for k, v in entry.items() if k not in ("index", "type")}
            lines.append(f"    journal[{entry['index']}] {entry.get('type', '?')} {_inline(fields)}")
        if "status" in event:
            lines.append(f"    status: {_status_line(event['status'])}")
        for action in event.get("next", []):
            lines.append(f"    next: {action}")
        if "effect" in event:
            lines.append(f"    effect: {event['effect']}")
    return "\n".join(lines)


def run_invocation(settings: Settings, invocation: str, as_json: bool = False) -> int:
    """`kinvoke replay --invocation <id>`: the invocation's timeline, from its partition's log."""
    try:
        inv = InvocationId.parse(invocation)
    except InvalidId as e:
        raise InspectError(str(e)) from None
    topic = Topics(settings.topic_prefix).commands
    count = partition_count(settings, topic)  # the topic's, whatever KINVOKE_PARTITIONS says
    partition = partition_of(inv.partition_key, count)
    settings = settings.model_copy(update={"partitions": count})
    try:
        decode = decoder_for(settings).decode_fetching
        events = timeline(_records(settings, partition), invocation, partition, count, decode)
    except RegistryUnavailable as e:
        raise InspectError(str(e)) from None
    if not events:
        raise InspectError(f"no command of {invocation} in {topic}[{partition}], its partition")
    if as_json:
        for event in events:
            print(
                json.dumps({"invocation_id": invocation, "partition": partition, **event}, ensure_ascii=False)
            )
    else:
        print(render_timeline(invocation, topic, partition, events))
    return 0

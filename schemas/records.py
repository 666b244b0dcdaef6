"""Typed views (pydantic) of the Avro records in `schemas/avro/`.

Field names equal the Avro field names, so a model dumps straight to the Avro datum. Union
branches carry their Avro full name: fastavro writes a dict's `-type` branch and reads union
records back as `(name, dict)` tuples, which `from_avro` turns into the right model.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from schemas import codec, compiled
from schemas.ids import partition_key_of

_MODELS: dict[str, type[AvroModel]] = {}
M = TypeVar("M", bound="AvroModel")


class AvroModel(BaseModel):
    model_config = ConfigDict(frozen=False, use_enum_values=False)
    avro_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.avro_name:
            _MODELS[cls.avro_name] = cls

    def to_avro(self) -> dict[str, Any]:
        return {name: _to_avro(getattr(self, name)) for name in type(self).model_fields}

    @classmethod
    def from_avro(cls, datum: dict[str, Any]) -> Self:
        return cls.model_validate({k: _from_avro(v) for k, v in datum.items()})

    def encode(self) -> bytes:
        writer = _writers.get(type(self), _UNCOMPILED)
        if writer is _UNCOMPILED:
            writer = _writers[type(self)] = compiled.compile_writer(
                self.avro_name, codec.named_schemas(), dict(_MODELS)
            )
        if writer is not None:
            out = bytearray(codec.header(self.avro_name))
            try:
                writer(self, out)
            except Exception:  # noqa: BLE001 - a value the schema cannot take: fastavro's error below
                pass
            else:
                return bytes(out)
        return codec.encode(self.avro_name, self.to_avro())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = _readers.get(cls, _UNCOMPILED)
        if reader is _UNCOMPILED:
            reader = _readers[cls] = compiled.compile_reader(
                cls.avro_name, codec.named_schemas(), dict(_MODELS)
            )
        # The current schema only: a record an older release wrote is resolved by fastavro.
        if reader is not None and type(data) is bytes and data[:10] == codec.header(cls.avro_name):
            try:
                model, end = reader(data, 10)
            except Exception:  # noqa: BLE001 - not a well-formed record: fastavro's error below
                pass
            else:
                if end <= len(data):  # a truncated bytes/string value slices short
                    return cast(Self, model)
        return cls.from_avro(codec.decode(cls.avro_name, data))


# Compiled per model class on first use (schemas/compiled.py); None: fastavro's path.
_UNCOMPILED: Any = object()
_writers: dict[type[AvroModel], compiled.Writer | None] = {}
_readers: dict[type[AvroModel], compiled.Reader | None] = {}


def _to_avro(value: Any) -> Any:
    if isinstance(value, AvroModel):
        return {"-type": value.avro_name, **value.to_avro()}
    if isinstance(value, list):
        return [_to_avro(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


def _from_avro(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] in _MODELS:
        return _MODELS[value[0]].from_avro(value[1])
    if isinstance(value, list):
        return [_from_avro(v) for v in value]
    return value


class ServiceType(StrEnum):
    SERVICE = "SERVICE"
    VIRTUAL_OBJECT = "VIRTUAL_OBJECT"
    WORKFLOW = "WORKFLOW"


class HandlerType(StrEnum):
    EXCLUSIVE = "EXCLUSIVE"
    SHARED = "SHARED"
    WORKFLOW = "WORKFLOW"


class InvokedByKind(StrEnum):
    INGRESS = "INGRESS"
    SERVICE = "SERVICE"
    SUBSCRIPTION = "SUBSCRIPTION"
    RESTART_AS_NEW = "RESTART_AS_NEW"


class InvocationPhase(StrEnum):
    SCHEDULED = "SCHEDULED"
    INBOXED = "INBOXED"
    INVOKED = "INVOKED"
    SUSPENDED = "SUSPENDED"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"


class InvocationTarget(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.InvocationTarget"
    service: str
    handler: str
    key: str | None = None
    service_ty: ServiceType
    handler_ty: HandlerType | None = None

    def __str__(self) -> str:
        if self.key is None:
            return f"{self.service}/{self.handler}"
        return f"{self.service}/{self.key}/{self.handler}"


class InvocationOptions(AvroModel):
    """Retry policy, timeouts and retentions an invocation runs with (null: Restate's default)."""

    avro_name: ClassVar[str] = "kinvoke.InvocationOptions"
    retry_initial_interval_ms: int | None = None
    retry_exponentiation_factor: float | None = None
    retry_max_interval_ms: int | None = None
    retry_max_attempts: int | None = None
    retry_on_max_attempts: str | None = None  # "Pause" | "Kill"
    inactivity_timeout_ms: int | None = None
    abort_timeout_ms: int | None = None
    journal_retention_ms: int | None = None
    completion_retention_ms: int | None = None


class Header(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Header"
    name: str
    value: str


class Failure(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Failure"
    code: int
    message: str
    metadata: dict[str, str] = Field(default_factory=dict)


class Success(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Success"
    value: bytes


class CallerRef(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.CallerRef"
    invocation_id: str
    completion_id: int


class InvokedBy(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.InvokedBy"
    kind: InvokedByKind
    invocation_id: str | None = None
    target: str | None = None
    subscription_id: str | None = None


class Invoke(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Invoke"
    invocation_id: str
    target: InvocationTarget
    argument: bytes
    headers: list[Header] = Field(default_factory=list)
    idempotency_key: str | None = None
    invoked_by: InvokedBy
    reply_to_results: bool = False
    ack_to_results: bool = False
    caller: CallerRef | None = None
    execute_at_ms: int | None = None
    options: InvocationOptions | None = None
    span_context: str | None = None  # W3C traceparent of the invocation span's parent


class Ended(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Ended"


class Suspended(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Suspended"
    waiting_completions: list[int] = Field(default_factory=list)
    waiting_signals: list[int] = Field(default_factory=list)
    waiting_named_signals: list[str] = Field(default_factory=list)


class AttemptFailed(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.AttemptFailed"
    code: int
    message: str
    stacktrace: str = ""
    related_command_index: int | None = None
    related_command_name: str | None = None
    related_command_type: int | None = None
    next_retry_delay_ms: int | None = None


class ResolvedCallee(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.ResolvedCallee"
    service_ty: ServiceType | None = None
    handler_ty: HandlerType | None = None
    error: str | None = None
    options: InvocationOptions | None = None


class CallCompleted(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.CallCompleted"
    invocation_id: str
    completion_id: int
    callee_id: str
    result: Success | Failure


class TimerFired(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.TimerFired"
    invocation_id: str
    completion_id: int
    wake_up_at_ms: int


class Signal(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Signal"
    invocation_id: str
    signal_id: int | None = None
    signal_name: str | None = None
    result: Success | Failure | None = None


class GetOutput(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.GetOutput"
    invocation_id: str
    wait: bool


class ManageOperation(StrEnum):
    CANCEL = "CANCEL"
    KILL = "KILL"
    PURGE = "PURGE"


class ManageInvocation(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.ManageInvocation"
    invocation_id: str
    operation: ManageOperation


class AttemptEnded(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.AttemptEnded"
    invocation_id: str
    attempt: int
    deployment_id: str
    protocol_version: int
    server: str | None = None
    new_entries: list[bytes] = Field(default_factory=list)
    outcome: Ended | Suspended | AttemptFailed
    callees: list[ResolvedCallee] = Field(default_factory=list)


class AttemptProgress(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.AttemptProgress"
    invocation_id: str
    attempt: int
    deployment_id: str
    protocol_version: int
    server: str | None = None
    new_entries: list[bytes] = Field(default_factory=list)
    callees: list[ResolvedCallee] = Field(default_factory=list)


class Barrier(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Barrier"
    owner: str
    nonce: str


class PatchState(AvroModel):
    """Admin state edit: the whole new state of `service`/`key` (see command.avsc)."""

    avro_name: ClassVar[str] = "kinvoke.PatchState"
    service: str
    key: str
    version: str | None = None
    new_state: dict[str, bytes] = Field(default_factory=dict)
    scope: str | None = None

    @property
    def partition_key(self) -> int:
        """Restate's `ServiceId::partition_key`: a scoped instance lives on its scope's partition."""
        return partition_key_of(self.scope if self.scope is not None else self.key)


class InvocationOperation(StrEnum):
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    PURGE_JOURNAL = "PURGE_JOURNAL"
    RESTART_AS_NEW = "RESTART_AS_NEW"


class OperateInvocation(AvroModel):
    """Pause, resume, purge-journal, restart-as-new (see command.avsc): a record of its own, so
    ManageInvocation's enum keeps the symbols earlier releases know."""

    avro_name: ClassVar[str] = "kinvoke.OperateInvocation"
    invocation_id: str
    operation: InvocationOperation
    deployment_id: str | None = None
    deployment_min_protocol: int | None = None
    deployment_max_protocol: int | None = None
    latest_deployment: bool = False
    from_entry: int | None = None
    new_invocation_id: str | None = None


class Command(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Command"
    timestamp_ms: int
    body: (
        Invoke
        | AttemptEnded
        | Barrier
        | CallCompleted
        | TimerFired
        | Signal
        | GetOutput
        | ManageInvocation
        | AttemptProgress
        | PatchState
        | OperateInvocation
    )


class InvocationStatus(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.InvocationStatus"
    invocation_id: str
    phase: InvocationPhase
    target: InvocationTarget
    invoked_by: InvokedBy
    idempotency_key: str | None = None
    reply_to_results: bool = False
    callers: list[CallerRef] = Field(default_factory=list)
    created_at_ms: int
    execute_at_ms: int | None = None
    modified_at_ms: int
    running_at_ms: int | None = None
    completed_at_ms: int | None = None
    deployment_id: str | None = None
    protocol_version: int | None = None
    last_attempt_server: str | None = None
    attempt: int = 0
    retry_count: int = 0  # failed attempts since the invoker's report began (sys_invocation.retry_count)
    retry_count_since_last_stored_entry: int = 0
    last_stored_entry_at_ms: int = 0
    next_retry_at_ms: int | None = None
    last_failure: AttemptFailed | None = None
    journal_length: int = 0
    commands_count: int = 0
    waiting: Suspended | None = None
    result: Success | Failure | None = None
    options: InvocationOptions | None = None
    seed_invocation_id: str | None = None
    span_context: str | None = None  # the Invoke's: the parent of the invocation's span
    retry_attempts: int = 0  # failed attempts counted by the retry policy (its loop restarts on resume)


class JournalEntry(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.JournalEntry"
    invocation_id: str
    index: int
    frame: bytes
    appended_at_ms: int


class InvocationResult(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.InvocationResult"
    invocation_id: str
    result: Success | Failure
    completed_at_ms: int
    idempotency_expires_at_ms: int | None = None


class ManageOutcome(StrEnum):
    DONE = "DONE"
    ACCEPTED = "ACCEPTED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    NOT_COMPLETED = "NOT_COMPLETED"


class ManageAnswer(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.ManageAnswer"
    invocation_id: str
    outcome: ManageOutcome


class OperationOutcome(StrEnum):
    DONE = "DONE"
    ACCEPTED = "ACCEPTED"
    ALREADY_PAUSED = "ALREADY_PAUSED"
    NOT_FOUND = "NOT_FOUND"
    NOT_RUNNING = "NOT_RUNNING"
    NOT_STARTED = "NOT_STARTED"
    COMPLETED = "COMPLETED"
    NOT_COMPLETED = "NOT_COMPLETED"
    STILL_RUNNING = "STILL_RUNNING"
    CANNOT_CHANGE_DEPLOYMENT = "CANNOT_CHANGE_DEPLOYMENT"
    DEPLOYMENT_NOT_FOUND = "DEPLOYMENT_NOT_FOUND"
    INCOMPATIBLE_DEPLOYMENT = "INCOMPATIBLE_DEPLOYMENT"
    UNSUPPORTED = "UNSUPPORTED"
    MISSING_INPUT = "MISSING_INPUT"
    JOURNAL_INDEX_OUT_OF_RANGE = "JOURNAL_INDEX_OUT_OF_RANGE"
    JOURNAL_COPY_RANGE_INVALID = "JOURNAL_COPY_RANGE_INVALID"


class OperationAnswer(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.OperationAnswer"
    invocation_id: str
    outcome: OperationOutcome
    new_invocation_id: str | None = None
    pinned_protocol_version: int | None = None


class OutputNotReady(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.OutputNotReady"
    invocation_id: str


class InvocationAccepted(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.InvocationAccepted"
    invocation_id: str
    previously_accepted: bool


class PendingStateEdit(AvroModel):
    """A PatchState waiting for the object's lock; due once `ahead` inbox entries had it."""

    avro_name: ClassVar[str] = "kinvoke.PendingStateEdit"
    ahead: int
    version: str | None = None
    new_state: dict[str, bytes] = Field(default_factory=dict)


class ObjectStatus(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.ObjectStatus"
    service: str
    key: str
    locked_by: str | None = None
    inbox: list[str] = Field(default_factory=list)
    pending_state: list[PendingStateEdit] = Field(default_factory=list)
    inbox_sequence_numbers: list[int] = Field(default_factory=list)  # one per inbox entry
    next_inbox_sequence_number: int = 0


class StateEntry(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.StateEntry"
    service: str
    key: str
    state_key: bytes
    value: bytes
    scope: str | None = None


class Timer(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Timer"
    invocation_id: str
    completion_id: int
    wake_up_at_ms: int


class PromiseWaiter(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.PromiseWaiter"
    invocation_id: str
    completion_id: int


class Promise(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.Promise"
    service: str
    key: str
    name: str
    result: Success | Failure | None = None
    waiters: list[PromiseWaiter] = Field(default_factory=list)

"""The processor's local directory: a slot per running processor, a store file per partition.

Kafka Streams keeps a process id and per-task state directories under `state.dir`, locked while
in use. Here too: a processor claims the first free slot (`processor-N/`, flock'ed) and keeps its
process id there, so a processor restarted after a crash reuses its transactional id and fences
its own predecessor at once; two processors started in one directory never share a slot. Store
files are per partition and locked by the task that uses them, so a partition moving between
processors on one machine keeps its checkpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka_core.file_lock import FileLock, try_lock


@dataclass
class Slot:
    number: int
    process_id: str
    lock: FileLock


class StateDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def claim_slot(self, limit: int = 1024) -> Slot:
        for n in range(limit):
            slot_dir = self.root / f"processor-{n}"
            lock = try_lock(slot_dir / "lock")
            if lock is None:
                continue
            id_file = slot_dir / "process-id"
            if not id_file.exists():
                id_file.write_text(uuid.uuid4().hex)
            return Slot(n, id_file.read_text().strip(), lock)
        raise RuntimeError(f"no free processor slot in {self.root} (more than {limit} processors?)")

    def store_path(self, partition: int) -> Path:
        return self.root / "partitions" / f"p{partition}.sqlite"

    def lock_store(self, partition: int) -> FileLock | None:
        return try_lock(self.root / "partitions" / f"p{partition}.lock")

"""How an entry handler refuses what a deployment sent: the attempt fails with this code."""

from __future__ import annotations


class EntryRejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

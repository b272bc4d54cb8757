"""The dispatcher's view of `scheduler.commands`: which (message, generation) were aborted.

Decision 5: the dispatcher does not fire while this view lags more than the cancel guard G.
The view is current while every partition is at its end (librdkafka partition EOF, with a
short fetch wait); `lag_ms` is how long ago it was last seen current.
"""

from __future__ import annotations

from scheduler.records import Command, CommandKind


class CommandView:
    def __init__(self, partitions: int, now_ms: int) -> None:
        self._aborted: dict[tuple[str, int], int] = {}  # (message id, generation) -> issued_ms
        self._at_end: dict[int, bool] = dict.fromkeys(range(partitions), False)
        self._last_current_ms = now_ms  # startup counts as current until the first read

    def apply(self, partition: int, command: Command | None, now_ms: int) -> None:
        """A record was read from `partition` (None: one that could not be decoded)."""
        if self.caught_up():
            self._last_current_ms = now_ms
        self._at_end[partition] = False
        if command is not None and command.kind is CommandKind.ABORT:
            self._aborted[(command.message_id, command.generation)] = command.issued_ms

    def reached_end(self, partition: int, now_ms: int) -> None:
        self._at_end[partition] = True
        if self.caught_up():
            self._last_current_ms = now_ms

    def aborted(self, message_id: str, generation: int) -> bool:
        return (message_id, generation) in self._aborted

    def caught_up(self) -> bool:
        return all(self._at_end.values())

    def lag_ms(self, now_ms: int) -> int:
        """0 while current; otherwise the time since the view was last current."""
        if self.caught_up():
            return 0
        return max(0, now_ms - self._last_current_ms)

    def prune(self, older_than_ms: int) -> None:
        stale = [k for k, issued in self._aborted.items() if issued < older_than_ms]
        for key in stale:
            del self._aborted[key]

    def __len__(self) -> int:
        return len(self._aborted)

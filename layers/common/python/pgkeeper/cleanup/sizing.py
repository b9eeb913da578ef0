"""How much the next transaction covers, so that each one takes about the target duration.

Costs are close to linear in blocks (or rows) within a region of the table, so the next size is the
last one scaled by target / measured. Growth is capped per step (x8, or x16 after a batch that
deleted nothing: scanning clean blocks is several times cheaper than deleting), so the first tiny
batch reaches full size in three steps without betting on one measurement; a batch cancelled at
the hard cap shrinks the size to a quarter before the same range is retried.
"""

from __future__ import annotations


class Sizer:
    GROW = 8.0
    GROW_CLEAN = 16.0
    SHRINK = 0.2
    AIM = 0.7
    """Aim well below the target: a busy machine stretches some batches by half, the target is a
    ceiling, and a batch cancelled at the cap wastes all its work."""

    def __init__(self, target_ms: float, initial: int, maximum: int, minimum: int = 1) -> None:
        self.target_ms = target_ms * self.AIM
        self.minimum = minimum
        self.maximum = maximum
        self.size = max(minimum, min(initial, maximum))

    def record(self, size: int, elapsed_ms: float, rows: int) -> None:
        """A batch of `size` units took `elapsed_ms` and deleted (or counted) `rows`."""
        if size <= 0:
            return
        grow = self.GROW if rows else self.GROW_CLEAN
        factor = grow if elapsed_ms < 1.0 else self.target_ms / elapsed_ms
        factor = max(self.SHRINK, min(grow, factor))
        # A short final range says little about the rate: never shrink because of it.
        proposed = int(size * factor)
        if size < self.size and proposed < self.size:
            return
        self.size = max(self.minimum, min(self.maximum, proposed))

    def cancelled(self, size: int) -> bool:
        """The batch hit the hard cap; False when it cannot get any smaller."""
        if size <= self.minimum:
            return False
        self.size = max(self.minimum, size // 4)
        return True

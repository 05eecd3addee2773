"""directstream's executor. Public API for processors: :class:`PoisonRecord` (one bad record)."""

from directstream.executor.errors import PoisonRecord

__all__ = ["PoisonRecord"]

"""The driver: one batch at a time (:mod:`.batch`), in one loop (:mod:`.loop`) over a host."""

from .batch import Driver
from .loop import run_stream
from .outcomes import RunMode, RunOutcome, Step
from .settings import DEFAULT_SETTINGS, DriverSettings

__all__ = ["DEFAULT_SETTINGS", "Driver", "DriverSettings", "RunMode", "RunOutcome", "Step", "run_stream"]

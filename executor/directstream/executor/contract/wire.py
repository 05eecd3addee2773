"""How a work unit reaches an executor and how its result comes back: the names both sides use.

The driver writes these and the executor reads them; neither spells them out on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

CONTRACT_VERSION: Final = 1

# -- input ---------------------------------------------------------------------------------------
ENV_WORK_UNIT: Final = "DIRECTSTREAM_WORK_UNIT"  # the JSON of one unit
ENV_WORK_UNITS: Final = "DIRECTSTREAM_WORK_UNITS"  # a JSON list of units (an Indexed Job's pods)
# A file holding that JSON list: on a cluster, mounted from the attempt's ConfigMap (no 128 KiB env limit).
ENV_WORK_UNITS_FILE: Final = "DIRECTSTREAM_WORK_UNITS_FILE"
ENV_COMPLETION_INDEX: Final = "JOB_COMPLETION_INDEX"  # which unit of the list (set by Kubernetes)
ENV_KAFKA_SECRET_PREFIX: Final = "DIRECTSTREAM_KAFKA_SECRET_"  # one variable per Secret key
# -- tuning and output ---------------------------------------------------------------------------
ENV_RESULT_FILE: Final = "DIRECTSTREAM_RESULT_FILE"
ENV_STALL_TIMEOUT: Final = "DIRECTSTREAM_STALL_TIMEOUT"
ENV_POSTGRES_DSN: Final = "DIRECTSTREAM_POSTGRES_DSN"  # the postgres sink's default dsnEnv
RESERVED_ENV_PREFIX: Final = "DIRECTSTREAM_"
# What users may set in spec.executors.env although it is under the reserved prefix.
USER_SETTABLE_ENV: Final = frozenset({ENV_STALL_TIMEOUT, ENV_POSTGRES_DSN})

TERMINATION_LOG: Final = Path("/dev/termination-log")
# Kubernetes truncates termination messages beyond this size.
TERMINATION_MESSAGE_LIMIT: Final = 4096

# -- exit codes ----------------------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # a range failed; the result names range and offset
EXIT_BAD_INPUT: Final = 2  # a malformed unit, unknown sink, bad options or client config
EXIT_DRIVER_UNREACHABLE: Final = 3  # a pool executor that could not reach its driver for too long
EXIT_SIGNAL_BASE: Final = 128  # 128 + N: stopped by signal N, open ranges aborted


def is_reserved_env(name: str) -> bool:
    """Variables the driver sets for the executor; a user may not set them."""
    return (name.startswith(RESERVED_ENV_PREFIX) and name not in USER_SETTABLE_ENV) or (
        name == ENV_COMPLETION_INDEX
    )

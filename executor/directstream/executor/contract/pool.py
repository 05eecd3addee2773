"""The warm pool's transport (``spec.executors.mode: pool``): names and checks both sides share.

Executors long-poll the driver over HTTP: ``POST`` of a small JSON body to each path below, with
``Authorization: Bearer <token>`` (the stream's random token; compared in constant time).

- ``/v1/lease`` ``{executor, waitSeconds}`` -> 200 ``{lease, leaseSeconds, identity, unit}`` or 204;
- ``/v1/renew`` ``{executor, lease}`` -> 200 ``{leaseSeconds}`` or 409 (stop the unit: revoked);
- ``/v1/result`` ``{executor, lease, result}`` -> 200, or 409 when it does not count;
- ``/v1/refuse`` ``{executor, lease, reason}`` -> 200 (the executor refused a stale unit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .units import WorkUnit

ENV_POOL_TOKEN: Final = "DIRECTSTREAM_POOL_TOKEN"
PATH_LEASE: Final = "/v1/lease"
PATH_RENEW: Final = "/v1/renew"
PATH_RESULT: Final = "/v1/result"
PATH_REFUSE: Final = "/v1/refuse"
MAX_BODY_BYTES: Final = 1 << 20


def identity_of(unit: WorkUnit) -> dict[str, Any]:
    """What names an attempt's unit: the stream, batch, attempt, unit index and pinned digest."""
    return {
        "stream": unit.stream,
        "batch": unit.batch_id,
        "attempt": unit.attempt,
        "index": unit.index,
        "digest": unit.digest,
    }


def stale_reason(
    unit: WorkUnit, identity: Mapping[str, Any], stream: str, newest: tuple[int, int]
) -> str | None:
    """Why an executor must refuse ``unit``, or None. ``newest`` is the (batch, attempt) it last ran."""
    if dict(identity) != identity_of(unit):
        return f"the unit {identity_of(unit)} does not match the lease's identity {dict(identity)}"
    if unit.stream != stream:
        return f"the unit belongs to stream {unit.stream!r}, this executor serves {stream!r}"
    if (unit.batch_id, unit.attempt) < newest:
        return (
            f"batch {unit.batch_id} attempt {unit.attempt} is older than batch {newest[0]} "
            f"attempt {newest[1]}, which this executor already ran"
        )
    return None

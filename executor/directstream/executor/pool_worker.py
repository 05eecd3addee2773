"""A warm executor (``spec.executors.mode: pool``): long-polls the driver for units until stopped.

    python -m directstream.executor.pool_worker --url URL --executor-id ID --stream NAME
    (the token in $DIRECTSTREAM_POOL_TOKEN)

Each unit runs as ``directstream-executor`` would run it, in this process, while a thread renews
its lease. The unit stops (its open ranges aborted) when the driver revokes the lease or when no
renewal got through for most of a lease: the driver may then have leased the unit elsewhere, and
a unit must never run twice at once. A stale unit (older attempt, other stream, identity that
does not match) is refused. SIGTERM/SIGINT stop at once, aborting the open ranges.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaException

from directstream.executor.contract import ContractError, ExecutorResult, WorkUnit
from directstream.executor.contract.pool import (
    ENV_POOL_TOKEN,
    PATH_LEASE,
    PATH_REFUSE,
    PATH_RENEW,
    PATH_RESULT,
    stale_reason,
)
from directstream.executor.contract.wire import EXIT_DRIVER_UNREACHABLE
from directstream.executor.errors import ConfigurationError
from directstream.executor.processors import build_processor
from directstream.executor.reader import DEFAULT_CHUNK_SIZE, ReaderOptions, check_ranges
from directstream.executor.runner import run_unit

log = logging.getLogger("directstream.executor.pool")
WAIT_SECONDS = 5.0
# A unit stops once this share of its lease passed without a renewal getting through.
SELF_FENCE_SHARE = 0.7
# Long enough for an operator restart or a leader change; short enough that a pool whose executors
# can never reach the driver fails its attempt with why (crashes counted by driver/pool.py).
UNREACHABLE_TIMEOUT_S = 60.0


class Revoked(Exception):
    """The driver no longer holds this lease for us (409)."""


class Client:
    def __init__(self, url: str, token: str, executor_id: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.executor_id = executor_id

    def post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The JSON answer, None for 204; raises Revoked for 409, OSError when the driver is away."""
        data = json.dumps({"executor": self.executor_id, **body}).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status == 204:
                    return None
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            if exc.code == 409:
                raise Revoked(exc.read().decode(errors="replace")) from exc
            raise OSError(f"driver answered {exc.code} to {path}: {exc.read()[:200]!r}") from exc


class ReusedConsumer:
    """A consumer kept across units with the same settings (no reconnect per unit). The reader
    ``assign``s it afresh for each unit; its ``close`` only clears the unit's assignment."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)

    def close(self) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)  # a paused partition must not stay paused for the next unit
        self.consumer.unassign()


class ConsumerCache:
    """The last unit's consumer, reused while the settings (all but ``client.id``) stay the same."""

    def __init__(self) -> None:
        self.key: tuple[tuple[str, str], ...] | None = None
        self.consumer: ReusedConsumer | None = None

    def __call__(self, config: dict[str, Any]) -> ReusedConsumer:
        key = tuple(sorted((k, repr(v)) for k, v in config.items() if k != "client.id"))
        if self.consumer is None or key != self.key:
            self.drop()
            self.key, self.consumer = key, ReusedConsumer(Consumer(config))
        return self.consumer

    def drop(self) -> None:
        """Close it for good (settings changed, or a unit failed: start the next one clean)."""
        if self.consumer is not None:
            self.consumer.consumer.close()
        self.key, self.consumer = None, None


class Renewer(threading.Thread):
    """Renews one lease until told to stop; ``lost`` says the unit must stop."""

    def __init__(self, client: Client, lease_id: str, lease_seconds: float) -> None:
        super().__init__(daemon=True, name=f"renew-{lease_id}")
        self.client = client
        self.lease_id = lease_id
        self.lease_seconds = lease_seconds
        self.finished = threading.Event()
        self.revoked = threading.Event()
        self.last_ok = time.monotonic()

    def lost(self) -> bool:
        fenced = time.monotonic() - self.last_ok > SELF_FENCE_SHARE * self.lease_seconds
        return self.revoked.is_set() or fenced

    def run(self) -> None:
        while not self.finished.wait(self.lease_seconds / 4):
            try:
                answer = self.client.post(
                    PATH_RENEW, {"lease": self.lease_id}, timeout=self.lease_seconds / 4
                )
                self.last_ok = time.monotonic()
                if answer is not None:
                    self.lease_seconds = float(answer.get("leaseSeconds", self.lease_seconds))
            except Revoked:
                self.revoked.set()
                return
            except OSError as exc:
                log.warning("cannot renew lease %s: %s", self.lease_id, exc)


class Worker:
    def __init__(
        self,
        client: Client,
        stream: str,
        options: ReaderOptions,
        stop: threading.Event,
        unreachable_timeout: float = UNREACHABLE_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.unreachable_timeout = unreachable_timeout
        self.stream = stream
        self.options = options
        self.stop = stop
        self.newest = (-1, -1)
        self.consumers = ConsumerCache()
        self.busy = False  # running a unit: a stop aborts its ranges instead of exiting at once

    def serve(self) -> int:
        """Lease and run units until stopped (0), or until the driver stayed out of reach for
        ``unreachable_timeout`` (EXIT_DRIVER_UNREACHABLE): the pool then sees an executor die,
        with this message, instead of waiting for one that never calls."""
        backoff = 0.1
        away_since: float | None = None
        while not self.stop.is_set():
            try:
                answer = self.client.post(
                    PATH_LEASE, {"waitSeconds": WAIT_SECONDS}, timeout=WAIT_SECONDS + 10
                )
            except (OSError, Revoked) as exc:
                now = time.monotonic()
                away_since = now if away_since is None else away_since
                if now - away_since >= self.unreachable_timeout:
                    return self._give_up(exc)
                log.warning("driver unreachable: %s", exc)
                self.stop.wait(min(backoff, max(0.0, away_since + self.unreachable_timeout - now)))
                backoff = min(backoff * 2, 5.0)
                continue
            backoff, away_since = 0.1, None
            if answer is not None:
                self.handle(answer)
        return 0

    def _give_up(self, exc: Exception) -> int:
        log.error(
            "cannot reach the driver at %s for %gs, giving up: %s (is a NetworkPolicy in the way, the "
            "operator's --pool-url wrong, or the stream's token stale?)",
            self.client.url,
            self.unreachable_timeout,
            exc,
        )
        return EXIT_DRIVER_UNREACHABLE

    def handle(self, answer: dict[str, Any]) -> None:
        lease_id = str(answer.get("lease", ""))
        try:
            unit = WorkUnit.from_json(answer["unit"])
            check_ranges(unit.ranges)
            reason = stale_reason(unit, answer.get("identity") or {}, self.stream, self.newest)
        except (ContractError, ConfigurationError, KeyError, TypeError, ValueError) as exc:
            reason = f"invalid work unit: {exc}"
        if reason is not None:
            log.error("refusing lease %s: %s", lease_id, reason)
            self._send(PATH_REFUSE, {"lease": lease_id, "reason": reason})
            return
        self.newest = (unit.batch_id, unit.attempt)
        renewer = Renewer(self.client, lease_id, float(answer.get("leaseSeconds", 30.0)))
        renewer.start()
        self.busy = True
        try:
            result = self.run(unit, renewer)
        finally:
            self.busy = False
            renewer.finished.set()
        if renewer.revoked.is_set():
            log.warning("lease %s was revoked: result of unit %d not sent", lease_id, unit.index)
            return
        self._send(PATH_RESULT, {"lease": lease_id, "result": result.to_json()})
        log.info(
            "batch %d attempt %d unit %d: %s, %d records in %.3fs",
            unit.batch_id,
            unit.attempt,
            unit.index,
            "ok" if result.ok else f"FAILED: {result.error}",
            result.records,
            result.seconds,
        )

    def run(self, unit: WorkUnit, renewer: Renewer) -> ExecutorResult:
        try:
            processor = build_processor(unit.processor, unit)
            result = run_unit(
                unit,
                processor,
                self.options,
                lambda: self.stop.is_set() or renewer.lost(),
                consumer_factory=self.consumers,
            )
        except ConfigurationError as exc:
            result = ExecutorResult(
                unit.batch_id, unit.attempt, unit.index, ok=False, error=str(exc), digest=unit.digest
            )
        except KafkaException as exc:
            result = ExecutorResult(
                unit.batch_id, unit.attempt, unit.index, ok=False, error=f"Kafka: {exc}", digest=unit.digest
            )
        if not result.ok:
            self.consumers.drop()
        return result

    def _send(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.client.post(path, body, timeout=10.0)
        except Revoked as exc:
            log.warning("the driver did not count %s: %s", path, exc)
        except OSError as exc:
            log.warning("cannot reach the driver for %s: %s", path, exc)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="directstream-executor: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="directstream-pool-executor", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the driver's pool endpoint, http://HOST:PORT")
    parser.add_argument("--executor-id", required=True)
    parser.add_argument("--stream", required=True, help="the stream whose units this executor runs")
    parser.add_argument(
        "--stall-timeout", type=float, default=float(os.environ.get("DIRECTSTREAM_STALL_TIMEOUT", "60"))
    )
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument(
        "--unreachable-timeout",
        type=float,
        default=UNREACHABLE_TIMEOUT_S,
        help="exit (code 3) once the driver stayed out of reach this many seconds",
    )
    args = parser.parse_args(argv)
    if not args.unreachable_timeout > 0:
        parser.error("--unreachable-timeout must be a positive number of seconds")
    token = os.environ.get(ENV_POOL_TOKEN, "")
    if not token:
        log.error("bad input: $%s is not set", ENV_POOL_TOKEN)
        return 2
    stop = threading.Event()
    options = ReaderOptions(chunk_size=args.chunk_size, stall_timeout=args.stall_timeout)
    worker = Worker(
        Client(args.url, token, args.executor_id), args.stream, options, stop, args.unreachable_timeout
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not worker.busy:  # idle (in a long poll): nothing to abort, so do not wait for the poll
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return worker.serve()


if __name__ == "__main__":
    sys.exit(main())

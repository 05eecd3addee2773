"""Local mode's host: the spec comes from a file, executors are processes, state is a file, and
the run ends with an exit code (``directstream run``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from directstream.executor.contract.kafka import SECRET_CONFIG
from directstream.executor.contract.redact import remember

from ..adapters.kafka import KafkaOffsets, KafkaOffsetsPort
from ..adapters.local.launcher import LocalLauncher
from ..adapters.local.pool import LocalExecutorProcesses
from ..adapters.local.state import LocalStateStore
from ..adapters.pool_http import PoolServer
from ..adapters.postgres import AsyncOffsetStore, PostgresOffsetStore, dsn_for
from ..core.events import Event
from ..core.spec import StreamSpec
from ..core.spec_kafka import local_secret_variable
from ..core.work import executor_kafka_settings
from ..driver import Driver, DriverSettings
from ..driver.outcomes import Decision, Halt, RunMode
from ..driver.policies import exit_policy
from ..driver.pool import PoolLauncher
from ..driver.ports import Observer
from .waits import wait_for_any


def local_secrets(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The secret Kafka settings of local mode, ``{setting: variable}``: the ``DIRECTSTREAM_KAFKA_*``
    variables that are set (the manifest may not hold them; executor processes inherit them)."""
    return {k: local_secret_variable(k) for k in sorted(SECRET_CONFIG) if local_secret_variable(k) in environ}


def local_kafka(spec: StreamSpec, environ: Mapping[str, str] = os.environ) -> KafkaOffsets:
    """The driver's Kafka client of local mode, with the secret settings from the environment."""
    values = {setting: environ[variable] for setting, variable in local_secrets(environ).items()}
    remember(values.values())
    return KafkaOffsets(spec, values)


def build_local_driver(
    spec: StreamSpec, state_dir: Path, observe: Observer, settings: DriverSettings, stop: asyncio.Event
) -> Driver:
    """The driver with local mode's adapters (Kafka, a state file, executor processes or a warm pool)."""
    external = None
    if spec.offset_store == "postgres":
        external = AsyncOffsetStore(PostgresOffsetStore.for_spec(spec, dsn_for(spec)))

    async def sleep(seconds: float) -> None:
        await wait_for_any(seconds, stop)

    pool = PoolLauncher(  # job-mode attempts go to the LocalLauncher
        spec.name,
        LocalLauncher(state_dir / "attempts"),
        PoolServer("127.0.0.1"),
        LocalExecutorProcesses(state_dir / "pool"),
    )
    return Driver(
        spec,
        offsets=KafkaOffsetsPort(local_kafka(spec)),
        state=LocalStateStore(state_dir),
        launcher=pool,
        scaler=pool,
        executor_kafka=executor_kafka_settings(spec, local_secrets()),
        observe=observe,
        sleep=sleep,
        settings=settings,
        external=external,
    )


class LocalHost:
    def __init__(
        self,
        *,
        spec: StreamSpec,
        driver: Driver,
        observe: Observer,
        mode: RunMode,
        settings: DriverSettings,
        stop: asyncio.Event,
    ) -> None:
        self._spec = spec
        self._driver = driver
        self._observe = observe
        self._mode = mode
        self._settings = settings
        self.stop = stop  # shared with the driver, whose retry backoff a stop cuts short

    def request_stop(self) -> None:
        """Stop at the next batch boundary (a running batch finishes and commits first)."""
        self.stop.set()

    def observe(self, event: Event) -> None:
        self._observe(event)

    async def read_spec(self) -> StreamSpec:
        return self._spec

    async def driver_for(self, spec: StreamSpec) -> Driver:
        return self._driver

    async def checkpoint(self) -> None:
        """Nothing to do: the driver saved the state file itself."""

    def stopping(self) -> bool:
        return self.stop.is_set()

    async def sleep(self, seconds: float) -> None:
        await wait_for_any(seconds, self.stop)

    async def pause(self, seconds: float) -> None:
        await wait_for_any(seconds, self.stop)

    async def wait_for_change(self, at_most: float) -> None:
        await wait_for_any(at_most, self.stop)  # a file does not change under a run

    def on_halt(self, halt: Halt) -> Decision:
        return exit_policy(halt, self._mode, self._settings)

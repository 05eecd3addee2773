"""``directstream``: run a DirectStream without Kubernetes (local mode), and inspect it.

directstream run FILE [--once | --until-caught-up] [--state-dir DIR]
directstream status FILE [--state-dir DIR]
directstream plan FILE [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from directstream.executor.contract import ConfigurationError
from directstream.executor.contract.kafka import ALLOW_OIDC_FLAG
from directstream.executor.contract.redact import scrub

from .adapters.kafka import KafkaOffsetsPort
from .adapters.local.state import LocalStateStore, StateDirLocked, StateFileCorrupt, read_state_file
from .adapters.postgres import OffsetStoreError
from .cli_render import (
    ProgressPrinter,
    ledger_table,
    offsets_table,
    plan_report,
    poison_totals,
    scale_summary,
)
from .core.errors import KafkaUnavailable, PermanentError
from .core.events import Note
from .core.planning import DataLossError
from .core.spec import KIND, SpecError, StreamSpec, parse_stream
from .core.spec_access import check_oidc
from .core.status import lag_of
from .driver import DEFAULT_SETTINGS, RunMode, run_stream
from .driver.preview import preview_next_batch
from .hosts.local import LocalHost, build_local_driver, local_kafka

EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(PermanentError):
    """A problem the user can fix; printed without a traceback."""


def load_stream(path: str, bootstrap_override: str | None, allow_oidc: bool = False) -> StreamSpec:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from exc
    streams = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(streams) != 1:
        raise CliError(f"{path} must hold exactly one {KIND} document, found {len(streams)}")
    doc: dict[str, Any] = streams[0]
    try:
        spec = parse_stream(doc)
        check_oidc(spec, allow_oidc)
    except SpecError as exc:
        problems = "\n".join(f"  - {p}" for p in exc.problems)
        raise CliError(f"{path} is not a valid {KIND}:\n{problems}") from exc
    if bootstrap_override:
        spec = replace(spec, kafka=replace(spec.kafka, bootstrap_servers=bootstrap_override))
    return spec


def state_dir_for(spec: StreamSpec, given: str | None) -> Path:
    return Path(given) if given else Path.cwd() / ".directstream" / spec.name


async def _run(spec: StreamSpec, state_dir: Path, mode: RunMode, printer: ProgressPrinter) -> int:
    lock = LocalStateStore(state_dir)
    try:
        lock.lock()
    except StateDirLocked as exc:
        raise CliError(str(exc)) from exc
    try:
        stop = asyncio.Event()
        try:
            driver = build_local_driver(spec, state_dir, printer, DEFAULT_SETTINGS, stop)
        except OffsetStoreError as exc:
            raise CliError(str(exc)) from exc
        host = LocalHost(
            spec=spec, driver=driver, observe=printer, mode=mode, settings=DEFAULT_SETTINGS, stop=stop
        )
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interrupts = 0

        def on_interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                printer(Note(message="stopping at the next batch boundary (Ctrl-C again to abort the batch)"))
                host.request_stop()
            elif task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_interrupt)
        try:
            outcome = await run_stream(host, mode, DEFAULT_SETTINGS)
        except asyncio.CancelledError:
            printer.close()
            print("aborted; the batch's plan is recorded and resumes on the next run", file=sys.stderr)
            return 130
        finally:
            await driver.close()
        printer.close()
        state = await lock.load()
        total = sum(e.records for e in state.ledger)
        print(f"{spec.name}: {outcome.message}", file=sys.stderr)
        print(
            f"  records processed this run: {printer.records:,} in {printer.batches} batch(es); "
            f"recent batches hold {total:,}",
            file=sys.stderr,
        )
        if driver.latest:
            behind = sum(lag_of(state.committed, driver.latest).values())
            print(
                f"  committed offsets: {sum(state.committed.values()):,} over {len(state.committed)} "
                f"partition(s); lag {behind:,}",
                file=sys.stderr,
            )
        return 0 if outcome.ok else EXIT_FAILED
    finally:
        lock.unlock()


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_stream(args.file, args.bootstrap_servers, args.allow_kafka_oidc)
    mode = RunMode.ONCE if args.once else RunMode.UNTIL_CAUGHT_UP if args.until_caught_up else RunMode.FOREVER
    printer = ProgressPrinter()
    state_dir = state_dir_for(spec, args.state_dir)
    print(
        f"{spec.name}: running in local mode (state in {state_dir}, group {spec.group_id}, "
        f"Kafka {spec.kafka.bootstrap_servers})",
        file=sys.stderr,
    )
    return asyncio.run(_run(spec, state_dir, mode, printer))


def cmd_status(args: argparse.Namespace) -> int:
    spec = load_stream(args.file, args.bootstrap_servers, args.allow_kafka_oidc)
    state_dir = state_dir_for(spec, args.state_dir)
    try:
        state = read_state_file(state_dir)
    except StateFileCorrupt as exc:
        raise CliError(str(exc)) from exc
    latest: dict[tuple[str, int], int] | None = None
    try:
        offsets = local_kafka(spec)
        latest = {tp: m.latest for tp, m in offsets.watermarks(offsets.partitions()).items()}
    except KafkaUnavailable as exc:
        print(f"(lag unknown: {exc})", file=sys.stderr)
    print(f"stream {spec.name}  group {spec.group_id}  state {state_dir}")
    print(f"records committed (all time): {state.records_total:,}  next batch: {state.next_batch_id}")
    if poison_totals(state):
        print(f"poison records: {poison_totals(state)}")
    if latest is not None:
        print(f"total lag: {sum(lag_of(state.committed, latest).values()):,}")
    if scale_summary(state):
        print(f"executors: {scale_summary(state)}")
    if state.pending:
        p = state.pending
        print(
            f"\npending batch {p.plan.batch_id} (attempt {p.attempt}): "
            f"{len(p.plan.record_ranges)} ranges, {p.plan.offsets:,} offsets"
            + (f"\n  last error: {p.first_error}" if p.first_error else "")
        )
    print("\n" + offsets_table(state.committed, latest))
    if state.ledger:
        print("\nrecent batches:\n" + ledger_table(state))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    spec = load_stream(args.file, args.bootstrap_servers, args.allow_kafka_oidc)
    state_dir = state_dir_for(spec, args.state_dir)
    state = read_state_file(state_dir)

    offsets = KafkaOffsetsPort(local_kafka(spec))
    try:
        batch, note = asyncio.run(preview_next_batch(spec, state, offsets))
    except DataLossError as exc:
        raise CliError(f"the next batch cannot be planned: {exc}") from exc
    print(plan_report(spec, batch, note, state))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="directstream", description="Kafka direct-stream jobs, locally.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("file", help="a DirectStream manifest (YAML), or - for stdin")
        cmd.add_argument("--state-dir", help="local state (default: .directstream/<name>)")
        cmd.add_argument(
            "--bootstrap-servers",
            default=os.environ.get("DIRECTSTREAM_BOOTSTRAP_SERVERS"),
            help="override spec.kafka.bootstrapServers (env DIRECTSTREAM_BOOTSTRAP_SERVERS)",
        )
        cmd.add_argument(
            ALLOW_OIDC_FLAG,
            dest="allow_kafka_oidc",
            action="store_true",
            help="allow sasl.oauthbearer.method oidc (the Kafka clients fetch tokens from its URL)",
        )
        return cmd

    run = add("run", "run the stream's batches with local executor processes")
    modes = run.add_mutually_exclusive_group()
    modes.add_argument("--once", action="store_true", help="run one batch and exit")
    modes.add_argument(
        "--until-caught-up",
        action="store_true",
        help="exit 0 once committed offsets reach the latest offsets seen at start",
    )
    run.set_defaults(func=cmd_run)
    add("status", "committed offsets, lag per partition and recent batches").set_defaults(func=cmd_status)
    add("plan", "dry run: the next batch's ranges and executors").set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except CliError as exc:
        print(f"directstream: {scrub(str(exc))}", file=sys.stderr)
        code = EXIT_USAGE
    except ConfigurationError as exc:  # client settings librdkafka refuses: bad input
        print(f"directstream: {scrub(str(exc))}", file=sys.stderr)
        code = EXIT_USAGE
    except (KafkaUnavailable, StateFileCorrupt, OffsetStoreError) as exc:
        print(f"directstream: {scrub(str(exc))}", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()

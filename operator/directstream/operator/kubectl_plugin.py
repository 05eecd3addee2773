"""``kubectl directstream``: inspect and steer DirectStreams on a cluster (a kubectl plugin).

kubectl directstream status NAME        pending ranges, committed offsets and lag, batches, conditions
kubectl directstream plan NAME          what the next batch would read (reads Kafka, writes nothing)
kubectl directstream rewind NAME --to earliest|latest|TIMESTAMP|TOPIC:PARTITION=OFFSET ...
kubectl directstream suspend NAME       stop at the next batch boundary
kubectl directstream resume NAME

Flags as kubectl's: -n/--namespace (default: the kubeconfig context's), --context, --kubeconfig.
Exit codes: 0 ok, 1 the cluster or Kafka refused (not found, forbidden, unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from directstream.executor.contract import PoisonOptionsError, parse_poison

from .adapters.kafka import KafkaOffsets, KafkaOffsetsPort
from .adapters.kube.api import GROUP, PLURAL, VERSION
from .cli_render import ledger_table, plan_report, poison_totals, scale_summary, table
from .core.errors import KafkaUnavailable, PermanentError
from .core.planning import BatchPlan, DataLossError, TopicPartition
from .core.spec import SpecError, StreamSpec, parse_spec
from .core.spec_fields import RFC3339
from .core.spec_poison import describe_policy
from .core.state import StreamState
from .core.status import state_from_status
from .driver.preview import preview_next_batch

PROG = "kubectl directstream"
EXIT_FAILED = 1
EXIT_USAGE = 2
MERGE_PATCH = "application/merge-patch+json"


class PluginError(PermanentError):
    """A problem to print without a traceback, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str

    def _describe(self, exc: ApiException, name: str, verb: str) -> PluginError:
        if exc.status == 404:
            return PluginError(f'directstream "{name}" not found in namespace "{self.namespace}"')
        detail = exc.reason or ""
        body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
        if body:
            try:
                detail = json.loads(body).get("message", detail)
            except (ValueError, AttributeError):
                detail = str(body)[:300]
        if exc.status == 403:
            return PluginError(f"forbidden: cannot {verb} directstream {name}: {detail}")
        return PluginError(f"cannot {verb} directstream {name}: {exc.status} {detail}")

    def get(self, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            raise self._describe(exc, name, "get") from exc
        return obj

    def patch_spec(self, name: str, spec_patch: Mapping[str, Any]) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"spec": dict(spec_patch)},
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            raise self._describe(exc, name, "patch") from exc
        return obj

    def secret_data(self, name: str) -> dict[str, str]:
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            raise PluginError(
                f"cannot read Secret {self.namespace}/{name} (spec.kafka.configFrom): "
                f"{exc.status} {exc.reason}"
            ) from exc
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def connect(args: argparse.Namespace) -> Cluster:
    """The kubeconfig's cluster and namespace, as kubectl would pick them."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        chosen = active
        if args.context:
            chosen = next((c for c in contexts if c.get("name") == args.context), None)
            if chosen is None:
                raise PluginError(f'context "{args.context}" is not in the kubeconfig', EXIT_USAGE)
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except (config.ConfigException, OSError) as exc:
        raise PluginError(f"cannot load the kubeconfig: {exc}") from exc
    namespace = args.namespace or (chosen or {}).get("context", {}).get("namespace") or "default"
    return Cluster(api, namespace)


# -- status -----------------------------------------------------------------------------------


def _state(status: Mapping[str, Any], name: str) -> StreamState:
    try:
        return state_from_status(status)
    except ValueError as exc:
        raise PluginError(f"directstream {name} has a status this plugin cannot read: {exc}") from exc


def _lag_by_partition(status: Mapping[str, Any]) -> tuple[dict[TopicPartition, int], bool]:
    """Per-partition lag from ``status.lag`` (its most lagging partitions), and whether every
    other partition is known to be caught up."""
    lag = status.get("lag") or {}
    listed = {(str(p["topic"]), int(p["partition"])): int(p["lag"]) for p in lag.get("partitions") or []}
    complete = "total" in lag and int(lag["total"]) == sum(listed.values())
    return listed, complete


def offsets_rows(status: Mapping[str, Any], state: StreamState, limit: int) -> tuple[list[list[object]], int]:
    """Rows of committed offset and lag, the most lagging first past ``limit``; and how many were left out."""
    lags, complete = _lag_by_partition(status)
    rows: list[list[object]] = []
    for tp in sorted(set(state.committed) | set(lags)):
        lag: object = lags.get(tp, 0 if complete else "-")
        done = state.committed.get(tp)
        rows.append([tp[0], tp[1], "-" if done is None else done, lag])
    if len(rows) > limit:
        rows.sort(key=lambda r: -r[3] if isinstance(r[3], int) else 0)
        return rows[:limit], len(rows) - limit
    return rows, 0


def _age(timestamp: object) -> str:
    try:
        moment = time.mktime(time.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return "-"
    seconds = max(0, int(time.time() - moment))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def spec_policy(spec: Mapping[str, Any]) -> str:
    """The poison-record policy of a live spec, as ``plan`` shows it."""
    processor = spec.get("processor")
    try:
        return describe_policy(parse_poison(processor if isinstance(processor, Mapping) else {}))
    except PoisonOptionsError as exc:
        return f"invalid ({exc})"


def render_status(obj: Mapping[str, Any], max_rows: int = 50) -> str:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    name = str(meta.get("name"))
    state = _state(status, name)
    lag = status.get("lag") or {}
    out = [
        f"Name:       {name}",
        f"Namespace:  {meta.get('namespace')}",
        f"Phase:      {status.get('phase', 'Pending')}" + ("  (suspended)" if spec.get("suspend") else ""),
        f"Group:      {spec.get('groupId') or name}",
        f"Batch:      {status.get('batch', 0)} committed"
        + (f", {state.pending.plan.batch_id} pending" if state.pending else ""),
        f"Records:    {state.records_total:,} committed (all time)",
        f"Lag:        {int(lag['total']):,} records" if "total" in lag else "Lag:        unknown",
        f"On error:   {spec_policy(spec)}",
    ]
    if scale_summary(state):
        out.append(f"Executors:  {scale_summary(state)}")
    if poison_totals(state):
        out.append(f"Poison:     {poison_totals(state)}")
    if status.get("appliedReset") or spec.get("reset"):
        wanted = (spec.get("reset") or {}).get("id")
        applied = status.get("appliedReset")
        out.append(
            f"Reset:      applied {applied or '-'}" + (f", requested {wanted}" if wanted != applied else "")
        )
    if state.pending is not None:
        pending, job = state.pending, (status.get("pending") or {}).get("job")
        out.append(
            f"\nPending batch {pending.plan.batch_id} (attempt {pending.attempt}"
            + (f", job {job}" if job else "")
            + f"): {len(pending.plan.record_ranges)} range(s), {pending.plan.offsets:,} offsets"
        )
        if pending.first_error:
            out.append(f"  last error: {pending.first_error}")
        out.append(ranges_table(pending.plan))
    rows, hidden = offsets_rows(status, state, max_rows)
    out.append("\nCommitted offsets:")
    out.append(table(["TOPIC", "PARTITION", "COMMITTED", "LAG"], rows) if rows else "  none yet")
    if hidden:
        out.append(f"  ... {hidden} more partition(s) (the most lagging are shown)")
    if state.ledger:
        out.append("\nRecent batches:\n" + ledger_table(state))
    conditions = [
        [
            c.get("type", ""),
            c.get("status", ""),
            c.get("reason", ""),
            _age(c.get("lastTransitionTime")),
            c.get("message", ""),
        ]
        for c in status.get("conditions") or []
    ]
    if conditions:
        out.append("\nConditions:\n" + table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], conditions))
    return "\n".join(out)


def ranges_table(plan: BatchPlan) -> str:
    rows = [[r.topic, r.partition, r.from_offset, r.until_offset, r.count] for r in plan.record_ranges]
    return table(["TOPIC", "PARTITION", "FROM", "UNTIL", "OFFSETS"], rows) if rows else "  no records to read"


def cmd_status(cluster: Cluster, args: argparse.Namespace) -> int:
    print(render_status(cluster.get(args.name), args.max_rows))
    return 0


# -- plan -------------------------------------------------------------------------------------


def parse_live_spec(obj: Mapping[str, Any], namespace: str) -> StreamSpec:
    name = str((obj.get("metadata") or {}).get("name"))
    try:
        return parse_spec(name, dict(obj.get("spec") or {}), namespace)
    except SpecError as exc:
        problems = "\n".join(f"  - {p}" for p in exc.problems)
        raise PluginError(f"directstream {name} has an invalid spec:\n{problems}") from exc


def cmd_plan(cluster: Cluster, args: argparse.Namespace) -> int:
    obj = cluster.get(args.name)
    spec = parse_live_spec(obj, cluster.namespace)
    if args.bootstrap_servers:
        spec = replace(spec, kafka=replace(spec.kafka, bootstrap_servers=args.bootstrap_servers))
    secret = cluster.secret_data(spec.kafka.config_from_secret) if spec.kafka.config_from_secret else {}
    state = _state(obj.get("status") or {}, spec.name)
    try:
        plan, note = asyncio.run(
            preview_next_batch(spec, state, KafkaOffsetsPort(KafkaOffsets(spec, secret)))
        )
    except DataLossError as exc:
        raise PluginError(f"the next batch cannot be planned: {exc}") from exc
    if spec.suspend:
        print(f"(directstream {spec.name} is suspended: nothing runs until it is resumed)")
    print(plan_report(spec, plan, note, state))
    return 0


# -- rewind, suspend, resume ------------------------------------------------------------------


def reset_target(values: Sequence[str]) -> dict[str, Any]:
    """``--to`` as the ``to`` / ``timestamp`` / ``offsets`` of ``spec.reset`` (checked in full
    by the spec parser afterwards)."""
    if len(values) == 1 and values[0] in ("earliest", "latest"):
        return {"to": values[0]}
    if len(values) == 1 and RFC3339.fullmatch(values[0]):
        return {"to": "timestamp", "timestamp": values[0]}
    offsets: dict[str, dict[str, int]] = {}
    for value in values:
        where, sep, offset = value.rpartition("=")
        topic, colon, partition = where.rpartition(":")
        if not (sep and colon and topic and partition.isdigit() and offset.isdigit()):
            raise PluginError(
                f"--to {value!r}: expected earliest, latest, an RFC 3339 time such as 2026-11-01T00:00:00Z, "
                "or TOPIC:PARTITION=OFFSET (repeatable)",
                EXIT_USAGE,
            )
        offsets.setdefault(topic, {})[str(int(partition))] = int(offset)
    return {"to": "offsets", "offsets": offsets}


def cmd_rewind(cluster: Cluster, args: argparse.Namespace) -> int:
    target = reset_target(args.to)  # bad syntax fails before any request
    obj = cluster.get(args.name)
    spec, status = dict(obj.get("spec") or {}), obj.get("status") or {}
    taken = {(spec.get("reset") or {}).get("id"), status.get("appliedReset")}
    stamp = int(time.time())
    while f"rewind-{stamp}" in taken:  # two rewinds in one second still get distinct ids
        stamp += 1
    reset = {"id": f"rewind-{stamp}", **target}
    try:
        parse_spec(args.name, {**spec, "reset": reset}, cluster.namespace)
    except SpecError as exc:
        bad = [p for p in exc.problems if p.path.startswith("spec.reset")]
        if bad:
            raise PluginError("; ".join(f"--to: {p.message}" for p in bad), EXIT_USAGE) from exc
    cluster.patch_spec(args.name, {"reset": reset})
    print(
        f"directstream/{args.name}: reset {reset['id']} to {' '.join(args.to)} requested; "
        "the operator applies it at the next batch boundary (status.appliedReset)"
    )
    if args.wait:
        _wait(cluster, args, lambda o: (o.get("status") or {}).get("appliedReset") == reset["id"], "applied")
    return 0


def cmd_suspend(cluster: Cluster, args: argparse.Namespace, suspend: bool) -> int:
    obj = cluster.get(args.name)
    verb = "suspended" if suspend else "resumed"
    if bool((obj.get("spec") or {}).get("suspend")) == suspend:
        print(f"directstream/{args.name} already {verb}")
    else:
        cluster.patch_spec(args.name, {"suspend": suspend})
        print(f"directstream/{args.name} {verb}" + (" (at the next batch boundary)" if suspend else ""))
    if args.wait:
        _wait(cluster, args, lambda o: ((o.get("status") or {}).get("phase") == "Suspended") == suspend, verb)
    return 0


def _wait(
    cluster: Cluster, args: argparse.Namespace, done: Callable[[dict[str, Any]], bool], what: str
) -> None:
    deadline = time.monotonic() + args.timeout
    while not done(cluster.get(args.name)):
        if time.monotonic() > deadline:
            raise PluginError(f"directstream/{args.name}: not {what} after {args.timeout:.0f}s")
        time.sleep(1.0)
    print(f"directstream/{args.name}: {what}")


# -- the command line -------------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On the main parser and on each command, so flags go before or after the command as in kubectl;
    # SUPPRESS keeps a command's copy from overwriting a value given before it.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's)")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    _connection_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("name", help="the DirectStream's name")
        _connection_flags(cmd, suppress=True)
        return cmd

    def waits(cmd: argparse.ArgumentParser, what: str) -> None:
        cmd.add_argument("--wait", action="store_true", help=f"wait until the operator has {what}")
        cmd.add_argument("--timeout", type=float, default=120.0, help="seconds to --wait (default 120)")

    status = add(
        "status", "pending ranges, committed offsets and lag per partition, recent batches, conditions"
    )
    status.add_argument(
        "--max-rows", type=int, default=50, help="partitions shown at most (most lagging first)"
    )
    plan = add("plan", "what the next batch would read (reads Kafka, writes nothing)")
    plan.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("DIRECTSTREAM_BOOTSTRAP_SERVERS"),
        help="reach Kafka here instead of spec.kafka.bootstrapServers (env DIRECTSTREAM_BOOTSTRAP_SERVERS)",
    )
    rewind = add("rewind", "move the committed offsets once (spec.reset), at the next batch boundary")
    rewind.add_argument(
        "--to",
        nargs="+",
        required=True,
        metavar="TARGET",
        help="earliest | latest | an RFC 3339 time | TOPIC:PARTITION=OFFSET ... (other partitions stay)",
    )
    waits(rewind, "applied it")
    waits(add("suspend", "stop the stream at the next batch boundary (spec.suspend: true)"), "suspended it")
    waits(add("resume", "resume a suspended stream (spec.suspend: false)"), "resumed it")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[Cluster, argparse.Namespace], int]] = {
        "status": cmd_status,
        "plan": cmd_plan,
        "rewind": cmd_rewind,
        "suspend": lambda c, a: cmd_suspend(c, a, True),
        "resume": lambda c, a: cmd_suspend(c, a, False),
    }
    try:
        return commands[args.command](connect(args), args)
    except PluginError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except KafkaUnavailable as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib3.exceptions.HTTPError, ApiException) as exc:
        print(f"{PROG}: error: cannot reach the Kubernetes API server: {exc}", file=sys.stderr)
        return EXIT_FAILED


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()

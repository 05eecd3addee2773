"""``directstream-operator``: the controller that drives DirectStreams on Kubernetes.

directstream-operator [--namespace NS ... | --all-namespaces] [--executor-image IMAGE]
                      [--executor-repository REPOSITORY] [--liveness-port PORT] [--metrics-port PORT]
                      [--metrics-host HOST] [--log-format json|plain] [--verbose]
                      [--leader-elect-resource-name NAME] [--leader-elect-resource-namespace NS]
                      [--leader-elect-identity ID] [--leader-elect-lease-duration 15s]
                      [--leader-elect-renew-deadline 10s] [--leader-elect-retry-period 2s]
                      [--pool-port PORT] [--pool-host HOST] [--pool-url URL]

Without --executor-image, streams that leave spec.executors.image empty run the executor image of
this operator's own version: <executor repository>:<version>. Only the operator that holds the
leader Lease drives streams; others wait as standbys. With --pool-port, streams may use
spec.executors.mode: pool: warm executor pods long-poll this operator at --pool-url.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import socket
import sys
from pathlib import Path

import kopf

from directstream.executor.contract.kafka import ALLOW_OIDC_FLAG

from . import controller  # importing it registers the handlers
from .core.durations import parse_duration
from .core.executor_pod import DEFAULT_EXECUTOR_REPOSITORY, default_executor_image
from .core.leadership import ElectionSettings, ElectionSettingsError
from .metrics import OperatorMetrics, serve

DEFAULT_EXECUTOR_IMAGE = os.environ.get("DIRECTSTREAM_EXECUTOR_IMAGE", "")
DEFAULT_LEASE_NAME = "directstream-operator"
log = logging.getLogger(__name__)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_lease_namespace() -> str:
    """The operator pod's namespace (the chart sets DIRECTSTREAM_POD_NAMESPACE; else the service
    account's), or ``default`` outside a cluster."""
    if os.environ.get("DIRECTSTREAM_POD_NAMESPACE"):
        return os.environ["DIRECTSTREAM_POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    return "default"


def default_identity() -> str:
    """The pod's name and uid (the chart sets both from the downward API), else host and pid:
    unique per process, so two operators never both believe they hold the Lease."""
    pod = os.environ.get("DIRECTSTREAM_POD_NAME")
    if pod:
        uid = os.environ.get("DIRECTSTREAM_POD_UID")
        return f"{pod}_{uid}" if uid else pod
    return f"{socket.gethostname()}_{os.getpid()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="directstream-operator", description=__doc__.split("\n\n")[0])
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--executor-image",
        default=DEFAULT_EXECUTOR_IMAGE,
        help="executor image when spec.executors.image is empty (env DIRECTSTREAM_EXECUTOR_IMAGE; "
        "default: the executor repository at this operator's version)",
    )
    parser.add_argument(
        "--executor-repository",
        default=os.environ.get("DIRECTSTREAM_EXECUTOR_REPOSITORY", DEFAULT_EXECUTOR_REPOSITORY),
        metavar="REPOSITORY",
        help="repository of the default executor image, tagged with this operator's version "
        f"(env DIRECTSTREAM_EXECUTOR_REPOSITORY; default {DEFAULT_EXECUTOR_REPOSITORY})",
    )
    parser.add_argument(
        "--liveness-port",
        type=int,
        default=int(os.environ.get("DIRECTSTREAM_LIVENESS_PORT", "8080")),
        help="serve /healthz on this port (0 = off)",
    )
    parser.add_argument("--liveness-host", default=os.environ.get("DIRECTSTREAM_LIVENESS_HOST", "0.0.0.0"))
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("DIRECTSTREAM_METRICS_PORT", "9090")),
        help="serve Prometheus /metrics on this port (0 = off; env DIRECTSTREAM_METRICS_PORT)",
    )
    parser.add_argument("--metrics-host", default=os.environ.get("DIRECTSTREAM_METRICS_HOST", "0.0.0.0"))
    parser.add_argument(
        "--log-format", choices=["json", "plain"], default=os.environ.get("DIRECTSTREAM_LOG_FORMAT", "json")
    )
    parser.add_argument(
        ALLOW_OIDC_FLAG,
        dest="allow_kafka_oidc",
        action="store_true",
        default=os.environ.get("DIRECTSTREAM_ALLOW_KAFKA_OIDC", "") == "true",
        help="let streams use sasl.oauthbearer.method oidc: the operator's Kafka clients then fetch "
        "tokens from the URL a stream names (env DIRECTSTREAM_ALLOW_KAFKA_OIDC=true)",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    pool = parser.add_argument_group(
        "warm executors", "spec.executors.mode: pool; executor pods connect to this operator"
    )
    pool.add_argument(
        "--pool-port",
        type=int,
        default=int(os.environ.get("DIRECTSTREAM_POOL_PORT", "0")),
        help="serve the pool endpoint on this port (0 = off: pool streams get InvalidSpec; "
        "env DIRECTSTREAM_POOL_PORT)",
    )
    pool.add_argument("--pool-host", default=os.environ.get("DIRECTSTREAM_POOL_HOST", "0.0.0.0"))
    pool.add_argument(
        "--pool-url",
        default=os.environ.get("DIRECTSTREAM_POOL_URL", ""),
        metavar="URL",
        help="where executor pods reach this operator's pool endpoint (env DIRECTSTREAM_POOL_URL; "
        "default http://$DIRECTSTREAM_POD_IP:PORT, else http://<pool host>:PORT): this very "
        "operator, not a Service that may pick a standby",
    )
    election = parser.add_argument_group(
        "leader election", "one coordination.k8s.io/v1 Lease; only its holder drives streams"
    )
    election.add_argument(
        "--leader-elect-resource-name",
        default=os.environ.get("DIRECTSTREAM_LEASE_NAME", DEFAULT_LEASE_NAME),
        metavar="NAME",
        help=f"the Lease's name (env DIRECTSTREAM_LEASE_NAME; default {DEFAULT_LEASE_NAME})",
    )
    election.add_argument(
        "--leader-elect-resource-namespace",
        default=os.environ.get("DIRECTSTREAM_LEASE_NAMESPACE") or default_lease_namespace(),
        metavar="NS",
        help="the Lease's namespace (env DIRECTSTREAM_LEASE_NAMESPACE; default: the pod's namespace, "
        "or default outside a cluster)",
    )
    election.add_argument(
        "--leader-elect-identity",
        default=os.environ.get("DIRECTSTREAM_LEADER_IDENTITY") or default_identity(),
        metavar="ID",
        help="this operator's holder identity (default: pod name and uid, or hostname and pid)",
    )
    defaults = ElectionSettings()
    election.add_argument(
        "--leader-elect-lease-duration",
        default=f"{defaults.lease_duration_s}s",
        metavar="DURATION",
        help="how long a standby waits, from the last renewal it saw, before taking the Lease over "
        "(whole seconds; default %(default)s)",
    )
    election.add_argument(
        "--leader-elect-renew-deadline",
        default=f"{defaults.renew_deadline_s:g}s",
        metavar="DURATION",
        help="the leader stops driving if it could not renew for this long (default %(default)s)",
    )
    election.add_argument(
        "--leader-elect-retry-period",
        default=f"{defaults.retry_period_s:g}s",
        metavar="DURATION",
        help="how often the leader renews and a standby tries (default %(default)s)",
    )
    return parser


def executor_image(args: argparse.Namespace) -> str:
    """``--executor-image``, else the executor image of this operator's version."""
    if args.executor_image:
        return str(args.executor_image)
    try:
        version = importlib.metadata.version("directstream")
    except importlib.metadata.PackageNotFoundError:
        print("directstream-operator: the package is not installed: pass --executor-image", file=sys.stderr)
        sys.exit(2)
    return default_executor_image(args.executor_repository, version)


def election_config(args: argparse.Namespace) -> controller.ElectionConfig:
    """The election flags, checked; raises ``ValueError`` with a message for the user."""
    lease = parse_duration(args.leader_elect_lease_duration)
    if lease != int(lease):
        raise ValueError(f"--leader-elect-lease-duration must be whole seconds, got {lease:g}s")
    try:
        settings = ElectionSettings(
            lease_duration_s=int(lease),
            renew_deadline_s=parse_duration(args.leader_elect_renew_deadline),
            retry_period_s=parse_duration(args.leader_elect_retry_period),
        )
    except ElectionSettingsError as exc:
        raise ValueError(str(exc)) from exc
    return controller.ElectionConfig(
        namespace=args.leader_elect_resource_namespace,
        name=args.leader_elect_resource_name,
        identity=args.leader_elect_identity,
        settings=settings,
    )


def pool_endpoint(args: argparse.Namespace) -> controller.PoolEndpoint | None:
    """The pool flags, checked; None when off. Raises ``ValueError`` with a message for the user."""
    if not args.pool_port:
        return None
    if not 0 < args.pool_port < 65536:
        raise ValueError(f"--pool-port must be a TCP port, got {args.pool_port}")
    url = str(args.pool_url)
    if not url:
        host = os.environ.get("DIRECTSTREAM_POD_IP") or args.pool_host
        if host in ("0.0.0.0", "::"):
            raise ValueError("--pool-url is needed: executors cannot reach a wildcard --pool-host")
        url = f"http://{host}:{args.pool_port}"
    if not url.startswith("http://"):
        raise ValueError(f"--pool-url must be an http:// URL, got {url!r}")
    return controller.PoolEndpoint(args.pool_host, args.pool_port, url)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    namespaces = args.namespace or (
        [os.environ["DIRECTSTREAM_NAMESPACE"]] if os.environ.get("DIRECTSTREAM_NAMESPACE") else []
    )
    if not args.all_namespaces and not namespaces:
        print("directstream-operator: pass --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        sys.exit(2)
    try:
        election = election_config(args)
        pool = pool_endpoint(args)
    except ValueError as exc:
        print(f"directstream-operator: {exc}", file=sys.stderr)
        sys.exit(2)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    image = executor_image(args)
    log.info("executor image for streams without spec.executors.image: %s", image)
    memo = kopf.Memo(executor_image=image, election=election, allow_kafka_oidc=args.allow_kafka_oidc)
    if pool is not None:
        memo.pool_endpoint = pool  # served from kopf's startup (controller.configure), on its loop
    if args.metrics_port:
        metrics = OperatorMetrics()
        if serve(metrics, args.metrics_port, args.metrics_host):
            memo.metrics = metrics  # controller.drive_stream hands each stream its recorder
    liveness = f"http://{args.liveness_host}:{args.liveness_port}/healthz" if args.liveness_port else None
    kopf.run(
        # No kopf peering: the leader Lease (controller.configure) decides which operator drives.
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=memo,
    )

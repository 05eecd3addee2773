"""``directstream-operator``: the controller that drives DirectStreams on Kubernetes.

directstream-operator [--namespace NS ... | --all-namespaces] [--executor-image IMAGE]
                      [--executor-repository REPOSITORY] [--liveness-port PORT] [--metrics-port PORT]
                      [--metrics-host HOST] [--log-format json|plain] [--verbose]

Without --executor-image, streams that leave spec.executors.image empty run the executor image of
this operator's own version: <executor repository>:<version>.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys

import kopf

from . import controller  # noqa: F401  (importing it registers the handlers)
from .core.executor_pod import DEFAULT_EXECUTOR_REPOSITORY, default_executor_image
from .metrics import OperatorMetrics, serve

DEFAULT_EXECUTOR_IMAGE = os.environ.get("DIRECTSTREAM_EXECUTOR_IMAGE", "")
log = logging.getLogger(__name__)


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
    parser.add_argument("--verbose", "-v", action="store_true")
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    namespaces = args.namespace or (
        [os.environ["DIRECTSTREAM_NAMESPACE"]] if os.environ.get("DIRECTSTREAM_NAMESPACE") else []
    )
    if not args.all_namespaces and not namespaces:
        print("directstream-operator: pass --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        sys.exit(2)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    image = executor_image(args)
    log.info("executor image for streams without spec.executors.image: %s", image)
    memo = kopf.Memo(executor_image=image)
    if args.metrics_port:
        metrics = OperatorMetrics()
        if serve(metrics, args.metrics_port, args.metrics_host):
            memo.metrics = metrics  # controller.drive_stream hands each stream its recorder
    liveness = f"http://{args.liveness_host}:{args.liveness_port}/healthz" if args.liveness_port else None
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=memo,
    )

"""`kubectl logs` for the test node (it has no kubelet API): read the container logs it keeps on disk.

python -m tests.harness.podlogs NAMESPACE POD [-c CONTAINER] [--previous]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def node_state_dir() -> Path:
    """Where the node keeps its state: $DIRECTSTREAM_NODE_STATE, else <dev dir>/cluster/node."""
    if "DIRECTSTREAM_NODE_STATE" in os.environ:
        return Path(os.environ["DIRECTSTREAM_NODE_STATE"])
    return Path(os.environ.get("DIRECTSTREAM_DEV_DIR", ROOT / ".dev")) / "cluster" / "node"


def pod_logs(
    namespace: str,
    pod: str,
    container: str | None = None,
    previous: bool = False,
    state_dir: Path | None = None,
) -> str:
    """The container's output (stdout and stderr interleaved); the only container when none is named."""
    pod_dir = (state_dir or node_state_dir()) / "logs" / namespace / pod
    if container is None:
        names = sorted(
            p.name.removesuffix(".log") for p in pod_dir.glob("*.log") if ".previous." not in p.name
        )
        if len(names) != 1:
            raise LookupError(f"pod {namespace}/{pod}: name one container of {names or 'none'}")
        container = names[0]
    path = pod_dir / (f"{container}.previous.log" if previous else f"{container}.log")
    if not path.exists():
        raise LookupError(f"no logs for {namespace}/{pod}/{container} at {path}")
    return path.read_text(errors="replace")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("namespace")
    p.add_argument("pod")
    p.add_argument("-c", "--container")
    p.add_argument("-p", "--previous", action="store_true")
    args = p.parse_args()
    try:
        sys.stdout.write(pod_logs(args.namespace, args.pod, args.container, args.previous))
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

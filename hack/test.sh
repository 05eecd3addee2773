#!/usr/bin/env bash
# The test command (`make test`): the whole suite. The kafka/k8s fixtures start the real
# servers when they are not up, and stop what they started.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# Slow one-time downloads and builds happen here, before pytest's per-test timeouts apply.
bash "$ROOT/hack/kafka.sh" fetch
bash "$ROOT/hack/s3proxy.sh" fetch
bash "$ROOT/hack/cluster.sh" build
set +e
"$ROOT/.venv/bin/python" -m pytest -q "$@"
code=$?
set -e
# pytest's 5 means "no tests ran": a failure here, not a pass.
[ $code -eq 5 ] && { log "pytest collected no tests"; exit 1; }
exit $code

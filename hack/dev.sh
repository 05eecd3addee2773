#!/usr/bin/env bash
# The development environment: Kafka, the control plane and the test node, PostgreSQL, the S3 server
# (S3Proxy), and .dev/env.
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  up)
    bash "$ROOT/hack/kafka.sh" up
    bash "$ROOT/hack/cluster.sh" up
    bash "$ROOT/hack/postgres.sh" up
    bash "$ROOT/hack/s3proxy.sh" up
    {
      echo "# source this file: the local Kafka, the test cluster and the project's tools"
      bash "$ROOT/hack/kafka.sh" env
      bash "$ROOT/hack/cluster.sh" env
      bash "$ROOT/hack/postgres.sh" env
      bash "$ROOT/hack/s3proxy.sh" env
      echo "export PATH=$ROOT/.venv/bin:\$PATH"
    } >"$DEV/env"
    log "ready: source $DEV/env"
    ;;
  down)
    bash "$ROOT/hack/cluster.sh" down || true
    bash "$ROOT/hack/postgres.sh" down || true
    bash "$ROOT/hack/s3proxy.sh" down || true
    bash "$ROOT/hack/kafka.sh" down || true
    rm -f "$DEV/env"
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

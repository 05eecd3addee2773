#!/usr/bin/env bash
# `make bench`: every benchmark against a local Kafka (and PostgreSQL and S3Proxy for the sinks). Each prints
# its figures and ratios against a baseline run side by side; nothing here is a pass/fail test.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
bash hack/kafka.sh up
eval "$(bash hack/kafka.sh env)"
export KAFKA_BOOTSTRAP
for bench in executor_throughput drain_rates json_encoders planning local_batch_overhead pool_scaling; do
  echo "== bench/$bench.py"
  "$PY" "bench/$bench.py"
  echo
done
bash hack/postgres.sh up
eval "$(bash hack/postgres.sh env)"
export DIRECTSTREAM_POSTGRES_DSN
echo "== bench/exactly_once_sinks.py"
"$PY" bench/exactly_once_sinks.py
echo
bash hack/s3proxy.sh up
eval "$(bash hack/s3proxy.sh env)"
export DIRECTSTREAM_S3_ENDPOINT DIRECTSTREAM_S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
echo "== bench/parquet_sink.py"
"$PY" bench/parquet_sink.py

#!/usr/bin/env bash
# `make demo`: a real local Kafka, sample data, and a DirectStream run in local mode until
# it has caught up, then a summary that checks the output against the topic.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
RECORDS="${DEMO_RECORDS:-100000}"
bash hack/kafka.sh up
eval "$(bash hack/kafka.sh env)"
rm -rf "$DEV/demo"
"$PY" hack/demo_data.py produce "$KAFKA_BOOTSTRAP" demo-clicks "$RECORDS" 4
echo
echo "\$ directstream run examples/local-demo.yaml --until-caught-up"
"$ROOT/.venv/bin/directstream" run examples/local-demo.yaml --until-caught-up \
  --bootstrap-servers "$KAFKA_BOOTSTRAP" --state-dir "$DEV/demo/state"
echo
echo "\$ directstream status examples/local-demo.yaml"
"$ROOT/.venv/bin/directstream" status examples/local-demo.yaml \
  --bootstrap-servers "$KAFKA_BOOTSTRAP" --state-dir "$DEV/demo/state" | head -20
"$PY" hack/demo_data.py summary "$KAFKA_BOOTSTRAP" demo-clicks clicks-demo "$DEV/demo/out"
echo
echo "output: $DEV/demo/out   Kafka keeps running at $KAFKA_BOOTSTRAP (stop it with: make dev-down)"

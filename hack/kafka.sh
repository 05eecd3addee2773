#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1.
#
#   hack/kafka.sh fetch   download the server and tools jars into the cache (Maven)
#   hack/kafka.sh up      start the broker (idempotent) and wait until it answers
#   hack/kafka.sh down    stop it and delete its data
#   hack/kafka.sh env     print `export KAFKA_BOOTSTRAP=...`
#   hack/kafka.sh tool CLASS ARGS...   run one of Kafka's own tools (e.g. kafka.tools... / org.apache.kafka.tools...)
#
# Settings: DIRECTSTREAM_DEV_DIR (state dir, default .dev: another dir gives a second broker of its own),
# KAFKA_PORT (default a free port), KAFKA_HEAP (default 512m; ~28 KiB of live heap per partition, so a
# broker with 10,000 partitions wants 1g).
source "$(dirname "$0")/lib.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
STATE="$DEV/kafka"
PORT_FILE="$STATE/port"

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is required to fetch Kafka"
  command -v java >/dev/null || die "Java 17+ is required to run Kafka"
  log "fetching Apache Kafka $KAFKA_VERSION jars"
  local work; work=$(mktemp -d)
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.directstream</groupId><artifactId>kafka-fetch</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  (cd "$work" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS")
  rm -rf "$work"
  touch "$LIBS/.complete"
}

bootstrap() { echo "127.0.0.1:$(cat "$PORT_FILE")"; }

answers() {
  # A metadata request through Kafka's own admin tool would cost a JVM start; a bare TCP
  # connect is not enough (the port opens before the broker is ready), so ask via Python if
  # confluent_kafka is importable, else via the TCP port.
  local bs; bs=$(bootstrap)
  if python3 -c 'import confluent_kafka' 2>/dev/null; then
    python3 - "$bs" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=2)
sys.exit(0 if md.brokers else 1)
PY
  else
    local host=${bs%:*} port=${bs##*:}
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  fi
}

up() {
  fetch
  if pid_alive "$STATE/pid"; then log "already running at $(bootstrap)"; return 0; fi
  rm -rf "$STATE"; mkdir -p "$STATE/data"
  local port ctrl
  port=${KAFKA_PORT:-$(free_port)}; ctrl=$(free_port)
  echo "$port" >"$PORT_FILE"
  cat >"$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$STATE/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=5000
PROPS
  local cp="$LIBS/*"
  java -cp "$cp" kafka.tools.StorageTool format --standalone -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
    -c "$STATE/server.properties" >"$STATE/format.log" 2>&1 \
    || java -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
      -c "$STATE/server.properties" >"$STATE/format.log" 2>&1 \
    || { cat "$STATE/format.log" >&2; die "formatting Kafka storage failed"; }
  log "starting Kafka $KAFKA_VERSION on $(bootstrap)"
  cat >"$STATE/log4j2.yaml" <<'L4J'
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger: [{name: kafka.server.KafkaServer, level: INFO}, {name: kafka.server.KafkaRaftServer, level: INFO}]
L4J
  KAFKA_HEAP=${KAFKA_HEAP:-512m}
  setsid java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STATE/log4j2.yaml" -Dkafka.logs.dir="$STATE" \
    -cp "$cp" kafka.Kafka "$STATE/server.properties" >"$STATE/kafka.log" 2>&1 </dev/null &
  echo $! >"$STATE/pid"
  await_server Kafka "$STATE/pid" "$STATE/kafka.log" 60 answers
  log "Kafka is up at $(bootstrap)"
}

down() {
  stop_pid "$STATE/pid"
  rm -rf "$STATE"
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  env) [ -f "$PORT_FILE" ] && echo "export KAFKA_BOOTSTRAP=$(bootstrap)" ;;
  tool) shift; fetch; exec java -Dlog4j2.level=WARN -cp "$LIBS/*" "$@" ;;
  *) echo "usage: $0 fetch|up|down|env|tool" >&2; exit 2 ;;
esac

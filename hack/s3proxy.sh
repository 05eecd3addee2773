#!/usr/bin/env bash
# A real S3 API server on 127.0.0.1: S3Proxy (Maven Central, org.gaul:s3proxy) with its filesystem
# backend, for the parquet sink's tests and the demo.
#
#   hack/s3proxy.sh fetch   download S3Proxy and its dependencies into the cache (Maven)
#   hack/s3proxy.sh up      start the server (idempotent), create the bucket, wait until it answers
#   hack/s3proxy.sh down    stop it and delete its data
#   hack/s3proxy.sh env     print the exports that reach it: DIRECTSTREAM_S3_ENDPOINT, DIRECTSTREAM_S3_BUCKET,
#                           AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#
# The credentials are fixed development values (the server listens on 127.0.0.1 only). The AWS SDKs'
# default request checksums (2025 on) are not understood by S3Proxy's UploadPart; the parquet sink relaxes
# them for endpoints it is given, and `env` exports the SDK-wide switch for other clients (aws CLI, DuckDB).
source "$(dirname "$0")/lib.sh"

S3PROXY_VERSION="${S3PROXY_VERSION:-2.6.0}"
LIBS="$CACHE/s3proxy-$S3PROXY_VERSION/libs"
STATE="$DEV/s3proxy"
PORT_FILE="$STATE/port"
ACCESS_KEY=directstream
SECRET_KEY=directstream-dev-secret
REGION=us-east-1
BUCKET=directstream

fetch() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is required to fetch S3Proxy"
  command -v java >/dev/null || die "Java 17+ is required to run S3Proxy"
  log "fetching S3Proxy $S3PROXY_VERSION jars"
  local work; work=$(mktemp -d)
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.directstream</groupId><artifactId>s3proxy-fetch</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.gaul</groupId><artifactId>s3proxy</artifactId><version>$S3PROXY_VERSION</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  (cd "$work" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS")
  rm -rf "$work"
  touch "$LIBS/.complete"
}

endpoint() { echo "http://127.0.0.1:$(cat "$PORT_FILE")"; }

# answers: an anonymous request gets an S3 answer (any HTTP status) from the server.
answers() {
  python3 - "$(endpoint)" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=2)
except urllib.error.HTTPError:
    pass  # 403 AccessDenied: the server is up and checks signatures
except OSError:
    sys.exit(1)
PY
}

up() {
  fetch
  if pid_alive "$STATE/pid" && answers; then log "already running at $(endpoint)"; return 0; fi
  down
  mkdir -p "$STATE/data/$BUCKET"  # the filesystem backend's buckets are the base directory's folders
  local port; port=${S3PROXY_PORT:-$(free_port)}
  echo "$port" >"$PORT_FILE"
  cat >"$STATE/s3proxy.properties" <<PROPS
s3proxy.endpoint=http://127.0.0.1:$port
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$ACCESS_KEY
s3proxy.credential=$SECRET_KEY
jclouds.provider=filesystem
jclouds.filesystem.basedir=$STATE/data
PROPS
  log "starting S3Proxy $S3PROXY_VERSION on $(endpoint)"
  setsid java -Xmx${S3PROXY_HEAP:-256m} -cp "$LIBS/*" org.gaul.s3proxy.Main --properties "$STATE/s3proxy.properties" \
    >"$STATE/s3proxy.log" 2>&1 </dev/null &
  echo $! >"$STATE/pid"
  await_server S3Proxy "$STATE/pid" "$STATE/s3proxy.log" 60 answers
  log "S3Proxy is up at $(endpoint) (bucket $BUCKET)"
}

down() {
  stop_pid "$STATE/pid"
  rm -rf "$STATE"
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  env)
    if [ -f "$PORT_FILE" ]; then
      echo "export DIRECTSTREAM_S3_ENDPOINT=$(endpoint)"
      echo "export DIRECTSTREAM_S3_BUCKET=$BUCKET"
      echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY"
      echo "export AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
      echo "export AWS_REGION=$REGION"
      echo "export AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED"
      echo "export AWS_RESPONSE_CHECKSUM_VALIDATION=WHEN_REQUIRED"
    fi
    ;;
  *) echo "usage: $0 fetch|up|down|env" >&2; exit 2 ;;
esac

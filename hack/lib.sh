# Shared helpers for the hack/ scripts. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Slow downloads and builds are cached outside the repo, keyed by version.
CACHE="${DIRECTSTREAM_CACHE:-$HOME/.cache/directstream}"
# Runtime state (data dirs, logs, pid files) of the servers this checkout starts.
DEV="${DIRECTSTREAM_DEV_DIR:-$ROOT/.dev}"
mkdir -p "$CACHE" "$DEV"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# apt_install PKG... installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ ! -f "$DEV/.apt-updated" ]; then apt-get update -qq && touch "$DEV/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pid_alive FILE: the process recorded in FILE is running.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid FILE: stop the recorded process (TERM, then KILL) and forget it.
stop_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && die "timed out after ${secs}s waiting for $what"
    sleep 0.3
  done
}

# await_server NAME PIDFILE LOGFILE SECONDS CHECK...: wait until CHECK succeeds; show the log's tail
# and fail if the server exits or does not answer in time.
await_server() {
  local name=$1 pidfile=$2 logfile=$3 secs=$4; shift 4
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$pidfile" || { tail -30 "$logfile" >&2; die "$name exited during start"; }
    [ $SECONDS -ge $deadline ] && { tail -30 "$logfile" >&2; die "$name did not answer within ${secs}s"; }
    sleep 0.3
  done
}

# free_port: an unused TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

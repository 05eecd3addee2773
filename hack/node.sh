#!/usr/bin/env bash
# The dev node: the real kubelet with Debian's containerd and runc, inside a cgroup, mount and pid namespace
# of its own, so containers nest under the node's cgroup and their mounts never reach the host
# (../shared/recipes/real-node.md has every machine quirk this handles). hack/cluster_up.py writes the
# configs into DIR and runs:
#
#   hack/node.sh start DIR KUBELET    create DIR's cgroups, move there, and become the namespace's init
#   hack/node.sh cleanup DIR          after the init exited: remove the cgroups and the empty mount points
#
# The init stops everything on SIGTERM: kubelet, then every container (ctr), then containerd.
set -euo pipefail

HIERARCHIES=(cpu cpuacct cpuset memory devices freezer blkio pids systemd unified)
# Mount points inside the namespace; created empty on the host if missing, removed by cleanup.
MOUNT_POINTS=(/run/containerd /run/netns /var/lib/kubelet)

cgroup_name() { echo "directstream-node-$(printf %s "$1" | sha256sum | cut -c1-12)"; }

# own_path HIERARCHY: this process's cgroup in that hierarchy (from /proc/self/cgroup).
own_path() {
  local want=$1 line ctrls path
  while IFS= read -r line; do
    ctrls=${line#*:}; path=${ctrls#*:}; ctrls=${ctrls%%:*}
    case "$want" in
      unified) [ -z "$ctrls" ] && { echo "$path"; return; } ;;
      systemd) [ "$ctrls" = name=systemd ] && { echo "$path"; return; } ;;
      *) [[ ",$ctrls," == *",$want,"* ]] && { echo "$path"; return; } ;;
    esac
  done </proc/self/cgroup
  echo /
}

mounted() { [ -d "/sys/fs/cgroup/$1" ] && mountpoint -q "/sys/fs/cgroup/$1"; }

start() {
  local dir=$1 kubelet=$2 name h base
  name=$(cgroup_name "$dir")
  : >"$dir/cgroups"
  for h in "${HIERARCHIES[@]}"; do
    mounted "$h" || continue
    base="/sys/fs/cgroup/$h$(own_path "$h")"
    base=${base%/}
    mkdir -p "$base/$name"
    if [ "$h" = cpuset ]; then
      cat "$base/cpuset.cpus" >"$base/$name/cpuset.cpus"
      cat "$base/cpuset.mems" >"$base/$name/cpuset.mems"
    fi
    echo $$ >"$base/$name/cgroup.procs"
    echo "$base/$name" >>"$dir/cgroups"
  done
  for m in "${MOUNT_POINTS[@]}"; do
    [ -e "$m" ] || { mkdir -p "$m" && echo "$m" >>"$dir/created-mount-points"; }
  done
  exec unshare --cgroup --mount --propagation private --pid --fork --mount-proc \
    bash "$0" init "$dir" "$kubelet"
}

init() {
  local dir=$1 kubelet=$2 h
  # The cgroup hierarchies again, rooted at the node's cgroup (this cgroup namespace's root).
  mount -t tmpfs -o mode=755 cgroup-root /sys/fs/cgroup
  for h in "${HIERARCHIES[@]}"; do
    grep -q "/sys/fs/cgroup/$h " "$dir/hierarchies" || continue
    mkdir -p "/sys/fs/cgroup/$h"
    case "$h" in
      unified) mount -t cgroup2 cgroup2 "/sys/fs/cgroup/$h" ;;
      systemd) mount -t cgroup -o none,name=systemd cgroup "/sys/fs/cgroup/$h" ;;
      *) mount -t cgroup -o "$h" cgroup "/sys/fs/cgroup/$h" ;;
    esac
  done
  # kubelet sets these host sysctls; inside, it writes private files instead.
  mkdir -p "$dir/sysctl"
  while read -r key value; do
    local f="$dir/sysctl/${key//\//.}"
    echo "$value" >"$f"
    mount --bind "$f" "/proc/sys/$key"
  done <<'EOF'
vm/overcommit_memory 1
vm/panic_on_oom 0
kernel/panic 10
kernel/panic_on_oops 1
kernel/keys/root_maxkeys 1000000
kernel/keys/root_maxbytes 25000000
EOF
  mount -t tmpfs -o mode=711 containerd-run /run/containerd
  mount -t tmpfs -o mode=755 netns /run/netns
  mkdir -p "$dir/kubelet"
  mount --bind "$dir/kubelet" /var/lib/kubelet

  containerd --config "$dir/containerd.toml" >>"$dir/containerd.log" 2>&1 &
  local cpid=$!
  for _ in $(seq 1 100); do
    ctr --address "$dir/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  PATH="$dir/stub-bin:$PATH" "$kubelet" $(cat "$dir/kubelet.args") >>"$dir/kubelet.log" 2>&1 &
  local kpid=$!
  trap 'shutdown $kpid $cpid "$dir"; exit 0' TERM INT
  wait -n $kpid $cpid || true
  echo "node.sh: kubelet or containerd exited; stopping the node" >>"$dir/kubelet.log"
  shutdown $kpid $cpid "$dir"
  exit 1
}

shutdown() {
  local kpid=$1 cpid=$2 dir=$3 c
  trap - TERM INT
  stop_pid "$kpid" 20
  if kill -0 "$cpid" 2>/dev/null; then
    local ctr=(ctr --address "$dir/containerd.sock" -n k8s.io)
    for c in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 0.5
    for c in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop_pid "$cpid" 10
  # Leaving PID 1 kills whatever is left in the namespace (shims); its mounts go with it.
}

stop_pid() {
  local pid=$1 secs=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((secs * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Remove the node's cgroups (deepest first: kubepods/... nest inside) and the mount points it created.
cleanup() {
  local dir=$1 cg d
  [ -f "$dir/cgroups" ] && while read -r cg; do
    [ -d "$cg" ] || continue
    find "$cg" -depth -type d -print | while read -r d; do rmdir "$d" 2>/dev/null || true; done
  done <"$dir/cgroups"
  [ -f "$dir/created-mount-points" ] && while read -r d; do rmdir "$d" 2>/dev/null || true; done <"$dir/created-mount-points"
  rm -f "$dir/cgroups" "$dir/created-mount-points"
}

case "${1:-}" in
  start) mount | awk '{print $3" "}' | grep '^/sys/fs/cgroup/' >"$2/hierarchies"; start "$2" "$3" ;;
  init) init "$2" "$3" ;;
  cleanup) cleanup "$2" ;;
  *) echo "usage: $0 start DIR KUBELET | cleanup DIR" >&2; exit 2 ;;
esac

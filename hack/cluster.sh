#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, plus the dev node: the real kubelet with containerd and runc (hack/node.sh), running pods
# as real containers from the project's images (hack/images.py), loaded at every `up`.
#
#   hack/cluster.sh build   build kube-*, kubelet and kubectl (pinned) and helm into the cache; apt packages
#   hack/cluster.sh up      start everything (idempotent), write $DEV/cluster/kubeconfig
#   hack/cluster.sh down    stop everything this checkout started
#   hack/cluster.sh images  build the images (hack/images.py); load them into the node if it runs
#   hack/cluster.sh env     print export lines (KUBECONFIG, PATH)
source "$(dirname "$0")/lib.sh"

K8S_VERSION="${K8S_VERSION:-1.36.3}"
HELM_VERSION="${HELM_VERSION:-3.19.5}"
K8S_BIN="$CACHE/kubernetes-$K8S_VERSION/bin"
HELM_BIN="$CACHE/helm-$HELM_VERSION/bin"
STATE="$DEV/cluster"
KUBECONFIG_PATH="$STATE/kubeconfig"

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=0
  for b in "${want[@]}"; do [ -x "$K8S_BIN/$b" ] || missing=1; done
  [ $missing -eq 0 ] && return 0
  command -v go >/dev/null || die "go is required to build Kubernetes"
  local src="$CACHE/kubernetes-$K8S_VERSION/src"
  mkdir -p "$src" "$K8S_BIN"
  log "building Kubernetes v$K8S_VERSION (cold: about 5 minutes on 2 cores)"
  local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  (
    cd "$src"
    # The kubernetes module requires its staging modules at v0.0.0 and points them at ./staging;
    # outside its repo each must be replaced with its published v0.<minor>.<patch>.
    go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null
    local modfile
    modfile="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/go.mod"
    {
      echo "module directstream.local/k8sbuild"
      echo
      echo "go $(awk '/^go /{print $2}' "$modfile")"
      echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo
      awk '/=> \.\/staging/{print $1}' "$modfile" | while read -r m; do
        echo "replace $m => $m v0.${K8S_VERSION#*.}"
      done
    } >go.mod
    printf 'package main\n' >doc.go
    local pkgs=()
    for b in "${want[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    GOFLAGS=-mod=mod go get "${pkgs[@]/%/@v$K8S_VERSION}" >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "${pkgs[@]/%/@v$K8S_VERSION}"
    local ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$K8S_BIN/" "${pkgs[@]}"
  )
  log "built $(ls "$K8S_BIN" | tr '\n' ' ')"
}

# kubelet: same module, version and flags as the control plane; a separate go build so an existing
# control plane build is reused as is (its Go build cache makes this about a minute).
build_kubelet() {
  [ -x "$K8S_BIN/kubelet" ] && return 0
  local src="$CACHE/kubernetes-$K8S_VERSION/src" minor=${K8S_VERSION#*.}
  minor=${minor%%.*}
  [ -f "$src/go.mod" ] || die "$src/go.mod is missing: build the control plane first"
  log "building kubelet v$K8S_VERSION"
  (
    cd "$src"
    local ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$K8S_BIN/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet
    mv "$K8S_BIN/kubelet.tmp" "$K8S_BIN/kubelet"
  )
}

build_helm() {
  [ -x "$HELM_BIN/helm" ] && return 0
  log "building helm v$HELM_VERSION (about 1 minute)"
  mkdir -p "$HELM_BIN"
  GOBIN="$HELM_BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
}

build() {
  build_kubernetes
  build_kubelet
  build_helm
  apt_install etcd-server openssl util-linux containerd runc catatonit mmdebstrap
}

case "${1:-}" in
  build) build ;;
  up)
    build
    # hack/images.py builds the images with uv (make install brings it).
    python3 -m uv --version >/dev/null 2>&1 || die "uv is missing: run make install first"
    exec python3 "$ROOT/hack/cluster_up.py" up --state "$STATE" --bin "$K8S_BIN"
    ;;
  down) python3 "$ROOT/hack/cluster_up.py" down --state "$STATE" --bin "$K8S_BIN" ;;
  images)
    apt_install mmdebstrap catatonit
    if ctr --address "$STATE/node/containerd.sock" version >/dev/null 2>&1; then
      python3 "$ROOT/hack/images.py" load --address "$STATE/node/containerd.sock"
    else
      python3 "$ROOT/hack/images.py" build
    fi
    ;;
  env)
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    echo "export PATH=$K8S_BIN:$HELM_BIN:\$PATH"
    ;;
  *) echo "usage: $0 build|up|down|images|env" >&2; exit 2 ;;
esac

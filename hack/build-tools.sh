#!/usr/bin/env bash
# Builds the third-party tools the project tests and runs with, from the Go module proxy, into $TOOLS_BIN:
# the real Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl), etcd and
# controller-gen. A binary is rebuilt only when its version stamp changes, so reruns cost nothing.
# Cold build of everything on 2 cores: about 15-20 minutes.
#   usage: hack/build-tools.sh [tool ...]   (default: all)
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
mkdir -p "$TOOLS_BIN"

# The version must be stamped in: an unstamped apiserver reports v0.0.0-master+$Format:%H$, which kubectl rejects.
kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local f="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f="$f -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$f"
}

fresh() { [ -x "$TOOLS_BIN/$1" ] && [ "$(cat "$TOOLS_BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" > "$TOOLS_BIN/.$1.version"; }

# build_wrapped NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]: builds from one of our wrapper modules in hack/tools.
build_wrapped() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-"-s -w"}
  fresh "$name" "$version" && return 0
  log "building $name $version (a cold build takes minutes)"
  local t; t=$(now)
  (cd "$TETHER_ROOT/hack/tools/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$TOOLS_BIN/$name.tmp" "$pkg") \
    || die "building $name $version failed"
  mv "$TOOLS_BIN/$name.tmp" "$TOOLS_BIN/$name"; stamp "$name" "$version"
  log "built $name in $(since "$t")s"
}

# install_module NAME VERSION MODULE_PATH: plain `go install` for tools whose module has no replace directives.
install_module() {
  local name=$1 version=$2 path=$3
  fresh "$name" "$version" && return 0
  log "installing $name $version"
  local t; t=$(now)
  GOBIN="$TOOLS_BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$path@$version" \
    || die "installing $name $version failed"
  stamp "$name" "$version"
  log "installed $name in $(since "$t")s"
}

all=(controller-gen kube-apiserver etcd kubectl kube-controller-manager kube-scheduler)
[ $# -gt 0 ] && all=("$@")
for tool in "${all[@]}"; do
  case $tool in
    controller-gen) install_module controller-gen "$CONTROLLER_TOOLS_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen ;;
    etcd) build_wrapped etcd "$ETCD_VERSION" etcd . ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl)
      build_wrapped "$tool" "$KUBE_VERSION" kube "./$tool" "$(kube_ldflags)" ;;
    *) die "unknown tool $tool (known: controller-gen kube-apiserver etcd kubectl kube-controller-manager kube-scheduler)" ;;
  esac
done

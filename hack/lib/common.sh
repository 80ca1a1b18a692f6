# Shared settings for hack/ scripts. Source me; every value can be overridden from the environment.
TETHER_ROOT=${TETHER_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
OUTPUT=${OUTPUT:-$TETHER_ROOT/_output}
TOOLS_BIN=${TOOLS_BIN:-$OUTPUT/tools/bin}        # kube-apiserver, etcd, kubectl, controller-gen, ...
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.23.0}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

#!/usr/bin/env bash
# Runs the whole system on this machine: a real control plane (hack/local-cluster.sh), cloudcore, and one edge
# node (edgecore) connected to it. Stays in the foreground; Ctrl-C stops everything. `hack/local-up.sh down` stops
# a run from another terminal. Re-running starts from a clean state.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

LOCAL_DIR=${LOCAL_DIR:-$OUTPUT/local-up}
BIN_DIR=${BIN_DIR:-$OUTPUT/local/bin}
EDGE_NODE=${EDGE_NODE:-edge1}
CLUSTER=$TETHER_ROOT/hack/local-cluster.sh
export CLUSTER_DIR=${CLUSTER_DIR:-$OUTPUT/cluster}
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [ "${s:0:1}" != Z ]; }

stop_daemon() {
  local name=$1 pidfile=$LOCAL_DIR/$1.pid p i
  [ -f "$pidfile" ] || return 0
  p=$(cat "$pidfile")
  if kill "$p" 2>/dev/null; then
    for i in $(seq 1 100); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -9 "$p" 2>/dev/null
  fi
  rm -f "$pidfile"; log "stopped $name"
}

down() {
  stop_daemon edgecore
  stop_daemon cloudcore
  "$CLUSTER" down
  rm -rf "$LOCAL_DIR"
}

start_daemon() {   # start_daemon NAME CONFIG
  local name=$1 config=$2
  nohup "$BIN_DIR/$name" --config "$config" > "$LOCAL_DIR/logs/$name.log" 2>&1 &
  echo $! > "$LOCAL_DIR/$name.pid"
  sleep 0.5
  alive "$(cat "$LOCAL_DIR/$name.pid")" || { tail -n 20 "$LOCAL_DIR/logs/$name.log" >&2; die "$name exited at start"; }
  log "$name running (pid $(cat "$LOCAL_DIR/$name.pid")), log: $LOCAL_DIR/logs/$name.log"
}

# join_token waits for cloudcore to publish the join token (what `keadm gettoken` prints).
join_token() {
  local i tok
  for i in $(seq 1 300); do
    tok=$("$TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" -n kubeedge get secret tokensecret \
      -o jsonpath='{.data.tokendata}' 2>/dev/null | base64 -d 2>/dev/null || true)
    [ -n "$tok" ] && { echo "$tok"; return 0; }
    alive "$(cat "$LOCAL_DIR/cloudcore.pid")" || break
    sleep 0.2
  done
  tail -n 20 "$LOCAL_DIR/logs/cloudcore.log" >&2; die "cloudcore published no join token"
}

write_cloud_config() {
  local ca=$LOCAL_DIR/cloud/ca certs=$LOCAL_DIR/cloud/certs
  cat > "$LOCAL_DIR/cloudcore.yaml" <<EOT
apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
kubeAPIConfig:
  kubeConfig: $KUBECONFIG_FILE
modules:
  cloudHub:
    advertiseAddress: [127.0.0.1]
    tlsCAFile: $ca/rootCA.crt
    tlsCAKeyFile: $ca/rootCA.key
    tlsCertFile: $certs/server.crt
    tlsPrivateKeyFile: $certs/server.key
    websocket: {address: 127.0.0.1, port: 10000}
    https: {address: 127.0.0.1, port: 10002}
EOT
}

write_edge_config() {
  local edge=$LOCAL_DIR/edge/$EDGE_NODE
  cat > "$LOCAL_DIR/edgecore.yaml" <<EOT
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database:
  dataSource: $edge/edgecore.db
modules:
  edged:
    hostnameOverride: $EDGE_NODE
    rootDirectory: $edge/kubelet
  edgeHub:
    httpServer: https://127.0.0.1:10002
    tlsCaFile: $edge/ca/rootCA.crt
    tlsCertFile: $edge/certs/server.crt
    tlsPrivateKeyFile: $edge/certs/server.key
    token: $1
    websocket: {server: 127.0.0.1:10000}
EOT
}

up() {
  for b in cloudcore edgecore keadm; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing: run make (or make local-up, which builds first)"
  done
  [ -d "$LOCAL_DIR" ] && { log "cleaning up a previous run"; down; }
  mkdir -p "$LOCAL_DIR/logs" "$LOCAL_DIR/cloud/ca" "$LOCAL_DIR/cloud/certs" "$LOCAL_DIR/edge/$EDGE_NODE"
  trap 'echo; log "stopping"; down; exit 0' INT TERM
  local t0; t0=$(now)

  "$CLUSTER" up
  log "installing CRDs"
  "$TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" apply -f "$TETHER_ROOT/crds/" >/dev/null
  write_cloud_config
  start_daemon cloudcore "$LOCAL_DIR/cloudcore.yaml"
  write_edge_config "$(join_token)"
  start_daemon edgecore "$LOCAL_DIR/edgecore.yaml"

  cat <<EOT

Tether is up ($(since "$t0")s).
  kubectl:   export KUBECONFIG=$KUBECONFIG_FILE; $TOOLS_BIN/kubectl get nodes
  cloudcore: $LOCAL_DIR/logs/cloudcore.log
  edgecore:  $LOCAL_DIR/logs/edgecore.log (node $EDGE_NODE)
Press Ctrl-C to stop everything (or run 'make local-down' elsewhere).
EOT
  # Stay in the foreground until interrupted, and notice if a daemon dies.
  while true; do
    [ -d "$LOCAL_DIR" ] || { log "stopped from elsewhere"; exit 0; }
    for d in cloudcore edgecore; do
      alive "$(cat "$LOCAL_DIR/$d.pid")" || { tail -n 20 "$LOCAL_DIR/logs/$d.log" >&2; log "$d exited; stopping"; down; exit 1; }
    done
    sleep 2 & wait $!
  done
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac

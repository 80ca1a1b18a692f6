#!/usr/bin/env bash
# Runs the whole system on this machine: a real control plane (hack/local-cluster.sh), cloudcore, a private
# containerd with our images (hack/local-containerd.sh), and one edge node (edgecore) running pods on it, then
# deploys the demo apps onto the node. Stays in the foreground; Ctrl-C (or SIGTERM) stops everything in reverse
# order. `hack/local-up.sh down` stops a run from another terminal. Re-running starts from a clean state.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

LOCAL_DIR=${LOCAL_DIR:-$OUTPUT/local-up}
BIN_DIR=${BIN_DIR:-$OUTPUT/local/bin}
EDGE_NODE=${EDGE_NODE:-edge1}
DEMO_PORT=${DEMO_PORT:-8080}
CLUSTER=$TETHER_ROOT/hack/local-cluster.sh
CONTAINERD=$TETHER_ROOT/hack/local-containerd.sh
export CLUSTER_DIR=${CLUSTER_DIR:-$OUTPUT/cluster}
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
# Our containerd lives in the state dir, so `down` and re-runs clean it with the rest. Its dir and pod cgroup
# parent are fixed, and the parent is not local-containerd.sh's default /tether-pods: its `down` kills every pod
# of that dir and under that parent, so sharing either (with a `hack/local-containerd.sh up`, say) kills theirs.
export CONTAINERD_DIR=$LOCAL_DIR/containerd
export CONTAINERD_SOCK=$CONTAINERD_DIR/containerd.sock
export POD_CGROUP_PARENT=/tether-local-up
export TESTAPP_IMAGE=${TESTAPP_IMAGE:-docker.io/tether/testapp:v1}
LOGS=$LOCAL_DIR/logs
# A failed start copies every log here before tearing down, since down wipes the state dirs.
FAILED_LOGS=$OUTPUT/local-up-failed-logs

KUBECTL=("$TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE")
kc() { "${KUBECTL[@]}" "$@"; }
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [ "${s:0:1}" != Z ]; }   # zombies count as dead
# ours PIDFILE WORD: the recorded process is alive and its command line has WORD; PIDs get reused after a crash,
# and we must never signal a stranger.
ours() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && alive "$p" && grep -qsF -- "$2" "/proc/$p/cmdline"; }

stop_pid() {   # stop_pid NAME PID: SIGTERM, then SIGKILL after 10s
  local i
  kill "$2" 2>/dev/null || return 0
  for i in $(seq 1 100); do alive "$2" || return 0; sleep 0.1; done
  log "$1 did not stop on SIGTERM within 10s; killing"; kill -9 "$2" 2>/dev/null || true
}

stop_daemon() {
  local name=$1 pidfile=$LOCAL_DIR/$1.pid
  [ -f "$pidfile" ] || return 0
  if ours "$pidfile" "$BIN_DIR/$name"; then stop_pid "$name" "$(cat "$pidfile")"; log "stopped $name"; fi
  rm -f "$pidfile"
}

# down stops everything in reverse start order. Pods die with containerd (local-containerd.sh removes them
# first), not through the API: edgecore is stopped by then, and the cluster is wiped anyway.
down() {
  local p rc=0
  # A foreground run tears down itself when signalled; doing it here as well would race it.
  p=$(cat "$LOCAL_DIR/local-up.pid" 2>/dev/null || true)
  if [ -n "$p" ] && [ "$p" != "$$" ] && ours "$LOCAL_DIR/local-up.pid" local-up.sh; then
    log "stopping the running local-up (pid $p)"
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 600); do alive "$p" || break; sleep 0.1; done
    # It removes the state dir last, once all is stopped; otherwise carry on and stop what is left.
    [ -d "$LOCAL_DIR" ] || { log "local-up stopped"; return 0; }
  fi
  [ -d "$LOCAL_DIR" ] && touch "$LOCAL_DIR/stopping"
  stop_daemon edgecore
  "$CONTAINERD" down || rc=1
  stop_daemon cloudcore
  "$CLUSTER" down || rc=1
  # local-containerd.sh refuses to delete its dir while mounts remain in it, and so do we.
  [ "$rc" -eq 0 ] || die "stopping containerd or the cluster failed (see above); fix that, then run $0 down again"
  rm -rf "$LOCAL_DIR"
}

start_daemon() {   # start_daemon NAME CONFIG
  local name=$1 config=$2
  # setsid: a terminal's Ctrl-C reaches only this script, which then stops the daemons in order.
  setsid nohup "$BIN_DIR/$name" --config "$config" > "$LOGS/$name.log" 2>&1 &
  echo $! > "$LOCAL_DIR/$name.pid"
  sleep 0.5
  ours "$LOCAL_DIR/$name.pid" "$BIN_DIR/$name" || { tail -n 20 "$LOGS/$name.log" >&2; die "$name exited at start: see $name.log"; }
  log "$name running (pid $(cat "$LOCAL_DIR/$name.pid")), log: $LOGS/$name.log"
}

# run CMD...: runs CMD in the background and waits for it. Bash runs a trap only once the foreground command is
# done; waiting this way lets SIGTERM stop a start at once (teardown then kills CMD). CMD must be a program, not
# a function: bash execs a program in place, so $! is the program itself and killing it leaves nothing behind.
FG=
run() { local rc=0; "$@" & FG=$!; wait "$FG" || rc=$?; FG=; return "$rc"; }

# join_token waits for cloudcore to publish the join token (what `keadm gettoken` prints).
join_token() {
  local tok
  for _ in $(seq 1 300); do
    tok=$(kc -n kubeedge get secret tokensecret -o jsonpath='{.data.tokendata}' 2>/dev/null | base64 -d 2>/dev/null || true)
    [ -n "$tok" ] && { echo "$tok"; return 0; }
    ours "$LOCAL_DIR/cloudcore.pid" "$BIN_DIR/cloudcore" || break
    sleep 0.2
  done
  tail -n 20 "$LOGS/cloudcore.log" >&2; die "cloudcore published no join token (Secret kubeedge/tokensecret): see cloudcore.log"
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

# Only what differs from edgecore's defaults: the file is loaded over them.
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
    nodeIP: 127.0.0.1
    rootDirectory: $edge/kubelet
    tailoredKubeletConfig:
      containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
      imageServiceEndpoint: unix://$CONTAINERD_SOCK
      cgroupRoot: $POD_CGROUP_PARENT
      podLogsDir: $LOGS/pods
  edgeHub:
    httpServer: https://127.0.0.1:10002
    tlsCaFile: $edge/ca/rootCA.crt
    tlsCertFile: $edge/certs/server.crt
    tlsPrivateKeyFile: $edge/certs/server.key
    token: $1
    websocket: {server: 127.0.0.1:10000}
EOT
}

wait_node_ready() {
  # `kubectl wait --for=condition` fails at once on a node that is not registered yet, hence --for=create first.
  if ! run "${KUBECTL[@]}" wait --for=create "node/$EDGE_NODE" --timeout=60s >/dev/null ||
     ! run "${KUBECTL[@]}" wait --for=condition=Ready "node/$EDGE_NODE" --timeout=60s >/dev/null; then
    kc get nodes -o wide >&2 || true; tail -n 20 "$LOGS/edgecore.log" >&2
    die "node $EDGE_NODE not Ready within 60s: see edgecore.log and containerd.log"
  fi
  log "node $EDGE_NODE Ready"
}

# Demo apps: each deploys onto the edge node, checks itself, and adds its lines to the banner.
DEMO_LINES=()

deploy_hello() {
  local url=http://127.0.0.1:$DEMO_PORT/ pod out=
  # hostNetwork on loopback: there is no CNI here. No service account token: testapp never calls the API.
  kc apply -f - >/dev/null <<EOT
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, labels: {app: hello}}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      nodeSelector: {kubernetes.io/hostname: $EDGE_NODE}
      hostNetwork: true
      automountServiceAccountToken: false
      containers:
      - name: hello
        image: $TESTAPP_IMAGE
        imagePullPolicy: Never
        env:
        - {name: PORT, value: "$DEMO_PORT"}
        - {name: LISTEN_HOST, value: 127.0.0.1}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
EOT
  if ! run "${KUBECTL[@]}" wait --for=condition=Available deployment/hello --timeout=90s >/dev/null; then
    kc get pods -o wide >&2 || true; kc describe pods -l app=hello 2>/dev/null | tail -n 15 >&2 || true
    tail -n 20 "$LOGS/edgecore.log" >&2
    die "deployment hello not available within 90s: see the pod status above, edgecore.log and the pod logs"
  fi
  pod=$(kc get pods -l app=hello -o jsonpath='{.items[0].metadata.name}')
  # Ready means the container runs, not that it listens yet.
  for _ in $(seq 1 50); do
    out=$(curl -sf --max-time 2 "$url" 2>/dev/null) && [ "$out" = "hello from $pod" ] && break
    sleep 0.2
  done
  [ "$out" = "hello from $pod" ] || die "$url answered '$out', want 'hello from $pod': see the pod log"
  log "hello: $url answers '$out'"
  DEMO_LINES+=("hello:    curl $url   ($out)")
}

deploy_demos() {
  deploy_hello
  # The counter demo (examples/counter-demo: web app and mapper) goes here, as deploy_counter.
}

# teardown RC stops everything and exits with RC. Further signals are ignored (and so by the commands down
# runs): a second Ctrl-C must not cut the teardown short.
teardown() {
  local rc=$1
  trap '' INT TERM HUP; trap - EXIT
  [ -z "$FG" ] || kill "$FG" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    rm -rf "$FAILED_LOGS"; mkdir -p "$FAILED_LOGS"
    cp -rL "$LOGS/." "$FAILED_LOGS/" 2>/dev/null || true
    log "failed; stopping everything (logs kept in $FAILED_LOGS)"
  fi
  down
  exit "$rc"
}

# supervise stays in the foreground until interrupted, and stops everything when a daemon dies.
supervise() {
  local d
  while true; do
    if [ ! -d "$LOCAL_DIR" ] || [ -f "$LOCAL_DIR/stopping" ]; then trap - EXIT; log "stopped from elsewhere"; exit 0; fi
    for d in cloudcore edgecore; do
      ours "$LOCAL_DIR/$d.pid" "$BIN_DIR/$d" || { tail -n 20 "$LOGS/$d.log" >&2; log "$d exited"; teardown 1; }
    done
    ours "$CONTAINERD_DIR/containerd.pid" "$CONTAINERD_DIR/config.toml" || { tail -n 20 "$LOGS/containerd.log" >&2; log "containerd exited"; teardown 1; }
    "$CLUSTER" status >/dev/null || { "$CLUSTER" status >&2 || true; log "the control plane is incomplete"; teardown 1; }
    sleep 2 & wait $!
  done
}

up() {
  local b t0 tok
  for b in cloudcore edgecore keadm; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing: run make (or make local-up, which builds first)"
  done
  [ "$(id -u)" -eq 0 ] || die "containerd and pods need root: run make local-up as root"
  [ ${#CONTAINERD_SOCK} -lt 100 ] || die "socket path $CONTAINERD_SOCK is too long for a unix socket: set LOCAL_DIR to a shorter dir"
  [ -d "$LOCAL_DIR" ] && { log "cleaning up a previous run"; down; }
  rm -rf "$FAILED_LOGS"
  # A stray server on the demo port would answer our check: fail before starting anything.
  ! (exec 3<>"/dev/tcp/127.0.0.1/$DEMO_PORT") 2>/dev/null ||
    die "something already listens on 127.0.0.1:$DEMO_PORT, where the hello demo serves: stop it, or set DEMO_PORT"
  mkdir -p "$LOGS/pods" "$LOCAL_DIR/cloud/ca" "$LOCAL_DIR/cloud/certs" "$LOCAL_DIR/edge/$EDGE_NODE"
  echo $$ > "$LOCAL_DIR/local-up.pid"
  # One place for every log; these point into the dirs the other scripts own.
  ln -s "$CLUSTER_DIR/logs" "$LOGS/cluster"
  ln -s "$CONTAINERD_DIR/containerd.log" "$LOGS/containerd.log"
  trap 'echo >&2; log "stopping"; teardown 0' INT TERM HUP
  trap 'teardown $?' EXIT
  t0=$(now)

  # Cached after the first run; built before anything starts, so a build error leaves nothing running.
  run "$TETHER_ROOT/hack/build-images.sh"
  # setsid keeps the daemons these start out of the terminal's process group, like start_daemon.
  run setsid "$CLUSTER" up
  log "installing CRDs"
  kc apply -f "$TETHER_ROOT/crds/" >/dev/null
  write_cloud_config
  start_daemon cloudcore "$LOCAL_DIR/cloudcore.yaml"
  run setsid "$CONTAINERD" up   # also imports the images
  tok=$(join_token)   # an assignment, so that set -e sees join_token fail
  write_edge_config "$tok"
  start_daemon edgecore "$LOCAL_DIR/edgecore.yaml"
  wait_node_ready
  deploy_demos

  cat <<EOT

Tether is up ($(since "$t0")s): control plane, cloudcore, containerd, edge node $EDGE_NODE.
  kubectl:  export KUBECONFIG=$KUBECONFIG_FILE PATH=$TOOLS_BIN:\$PATH
            kubectl get nodes,pods -o wide
$(printf '  %s\n' "${DEMO_LINES[@]}")
  logs:     $LOGS/{cloudcore,edgecore,containerd}.log,
            pods in $LOGS/pods/, control plane in $LOGS/cluster/
  stop:     Ctrl-C here, or 'make local-down' (hack/local-up.sh down) from another terminal
EOT
  supervise
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac

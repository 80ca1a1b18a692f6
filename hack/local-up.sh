#!/usr/bin/env bash
# Runs the whole system on this machine the way a user installs it: a real control plane
# (hack/local-cluster.sh), `keadm init` (cloudcore), a private containerd with our images
# (hack/local-containerd.sh), `keadm join` of one edge node (edgecore with its embedded MQTT broker on 1883),
# then the counter demo: the mapper as a Deployment on the edge node, the web app on this host. Stays in the
# foreground; Ctrl-C (or SIGTERM) stops everything in reverse order. `hack/local-up.sh down` stops a run from
# another terminal. Re-running starts from a clean state.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

LOCAL_DIR=${LOCAL_DIR:-$OUTPUT/local-up}
BIN_DIR=${BIN_DIR:-$OUTPUT/local/bin}
EDGE_NODE=${EDGE_NODE:-edge1}
WEB_PORT=${WEB_PORT:-8089}
CLUSTER=$TETHER_ROOT/hack/local-cluster.sh
CONTAINERD=$TETHER_ROOT/hack/local-containerd.sh
DEMO=$TETHER_ROOT/examples/counter-demo
export CLUSTER_DIR=${CLUSTER_DIR:-$OUTPUT/cluster}
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
# keadm installs under these roots (--root) what it would put in /etc/kubeedge, /var/lib/kubeedge, ... of a
# host, so nothing of this machine's own paths or systemd is touched.
CLOUD_ROOT=$LOCAL_DIR/cloud
EDGE_ROOT=$LOCAL_DIR/$EDGE_NODE
# Our containerd lives in the state dir, so `down` and re-runs clean it with the rest. Its dir and pod cgroup
# parent are fixed, and the parent is not local-containerd.sh's default /tether-pods: its `down` kills every pod
# of that dir and under that parent, so sharing either (with a `hack/local-containerd.sh up`, say) kills theirs.
export CONTAINERD_DIR=$LOCAL_DIR/containerd
export CONTAINERD_SOCK=$CONTAINERD_DIR/containerd.sock
export POD_CGROUP_PARENT=/tether-local-up
# The images the edge node runs here (the web app runs as a process; see deploy_counter), for build and import.
export TETHER_IMAGES="pause counter-mapper"
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

# pidfile NAME: where the daemon's PID is; keadm keeps cloudcore's and edgecore's under its root.
pidfile() {
  case $1 in
    cloudcore) echo "$CLOUD_ROOT/var/run/kubeedge/cloudcore.pid" ;;
    edgecore) echo "$EDGE_ROOT/var/run/kubeedge/edgecore.pid" ;;
    *) echo "$LOCAL_DIR/$1.pid" ;;
  esac
}

keadm() { "$BIN_DIR/keadm" "$@"; }

# down stops everything in reverse start order. keadm reset edge removes the node's pods through CRI while
# containerd still runs; the cluster is wiped anyway, so nothing is deleted through the API.
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
  [ -d "$LOCAL_DIR" ] && { touch "$LOCAL_DIR/stopping"; mkdir -p "$LOGS"; }   # a start cut short may have no logs dir
  if ours "$(pidfile web-controller-app)" "$BIN_DIR/web-controller-app"; then
    stop_pid web-controller-app "$(cat "$(pidfile web-controller-app)")"; log "stopped web-controller-app"
  fi
  if [ -d "$EDGE_ROOT" ]; then
    keadm reset edge --force --root "$EDGE_ROOT" >> "$LOGS/keadm.log" 2>&1 || { log "keadm reset edge failed: see $LOGS/keadm.log"; rc=1; }
  fi
  "$CONTAINERD" down || rc=1
  if [ -d "$CLOUD_ROOT" ]; then
    keadm reset cloud --force --root "$CLOUD_ROOT" >> "$LOGS/keadm.log" 2>&1 || { log "keadm reset cloud failed: see $LOGS/keadm.log"; rc=1; }
  fi
  "$CLUSTER" down || rc=1
  # local-containerd.sh refuses to delete its dir while mounts remain in it, and so do we.
  [ "$rc" -eq 0 ] || die "stopping the system failed (see above); fix that, then run $0 down again"
  rm -rf "$LOCAL_DIR"
}

# run CMD...: runs CMD in the background and waits for it. Bash runs a trap only once the foreground command is
# done; waiting this way lets SIGTERM stop a start at once (teardown then kills CMD). CMD must be a program, not
# a function: bash execs a program in place, so $! is the program itself and killing it leaves nothing behind.
FG=
run() { local rc=0; "$@" & FG=$!; wait "$FG" || rc=$?; FG=; return "$rc"; }

# keadm_step WHAT ARGS...: runs keadm with its output in keadm.log, and shows the output when it fails.
keadm_step() {
  local what=$1; shift
  echo "\$ keadm $*" >> "$LOGS/keadm.log"
  if ! run "$BIN_DIR/keadm" "$@" >> "$LOGS/keadm.log" 2>&1; then
    tail -n 20 "$LOGS/keadm.log" >&2; die "keadm $what failed: see $LOGS/keadm.log"
  fi
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

# deploy_counter runs the counter demo: model and instance as the tutorial applies them, the mapper's Deployment
# on the edge node (it dials the embedded broker keadm join --with-mqtt put on 1883), and the web app here, with
# the admin kubeconfig (the tutorial runs it on a control-plane node, and this control plane runs no kubelet).
deploy_counter() {
  local url=http://127.0.0.1:$WEB_PORT/ out= f
  for f in kubeedge-counter-model.yaml kubeedge-counter-instance.yaml kubeedge-pi-counter-app.yaml; do
    sed "s/\bedge1\b/$EDGE_NODE/" "$DEMO/crds/$f" | kc apply -f - >/dev/null || die "kubectl apply -f $DEMO/crds/$f failed"
  done
  if ! run "${KUBECTL[@]}" wait --for=condition=Available deployment/kubeedge-pi-counter --timeout=90s >/dev/null; then
    kc get pods -o wide >&2 || true; kc describe pods -l k8s-app=kubeedge-pi-counter 2>/dev/null | tail -n 15 >&2 || true
    tail -n 20 "$LOGS/edgecore.log" >&2
    die "the counter mapper (deployment kubeedge-pi-counter) is not available within 90s: see the pod status above and edgecore.log"
  fi
  log "counter mapper running on $EDGE_NODE"
  setsid nohup "$BIN_DIR/web-controller-app" --kubeconfig "$KUBECONFIG_FILE" --address 127.0.0.1 --port "$WEB_PORT" \
    > "$LOGS/web-controller-app.log" 2>&1 &
  echo $! > "$(pidfile web-controller-app)"
  for _ in $(seq 1 100); do
    out=$(curl -sf --max-time 2 "${url}track/control/STATUS" 2>/dev/null) && break
    ours "$(pidfile web-controller-app)" "$BIN_DIR/web-controller-app" || break
    sleep 0.1
  done
  [[ $out == *'"Result":3'* ]] || { tail -n 20 "$LOGS/web-controller-app.log" >&2; die "the web app on $url does not answer STATUS: see web-controller-app.log"; }
  log "counter web app: $url answers $out"
  DEMO_LINES+=("counter demo: open $url  (ON + Execute starts the count on $EDGE_NODE; kubectl get device counter -o yaml -w)")
}

DEMO_LINES=()

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
    for d in cloudcore edgecore web-controller-app; do
      ours "$(pidfile "$d")" "$d" || { tail -n 20 "$LOGS/$d.log" >&2; log "$d exited"; teardown 1; }
    done
    ours "$CONTAINERD_DIR/containerd.pid" "$CONTAINERD_DIR/config.toml" || { tail -n 20 "$LOGS/containerd.log" >&2; log "containerd exited"; teardown 1; }
    "$CLUSTER" status >/dev/null || { "$CLUSTER" status >&2 || true; log "the control plane is incomplete"; teardown 1; }
    sleep 2 & wait $!
  done
}

up() {
  local b t0 tok
  for b in cloudcore edgecore keadm web-controller-app; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing: run make (or make local-up, which builds first)"
  done
  [ "$(id -u)" -eq 0 ] || die "containerd and pods need root: run make local-up as root"
  [ ${#CONTAINERD_SOCK} -lt 100 ] || die "socket path $CONTAINERD_SOCK is too long for a unix socket: set LOCAL_DIR to a shorter dir"
  [ -d "$LOCAL_DIR" ] && { log "cleaning up a previous run"; down; }
  rm -rf "$FAILED_LOGS"
  # Strays on our ports would answer our checks or make keadm fail late: say so before starting anything.
  for p in "$WEB_PORT" 1883 10000 10002; do
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null ||
      die "something already listens on 127.0.0.1:$p (web app $WEB_PORT, MQTT 1883, cloudcore 10000/10002): stop it (a mosquitto service? systemctl stop mosquitto), or set WEB_PORT"
  done
  mkdir -p "$LOGS" "$CLOUD_ROOT" "$EDGE_ROOT"
  echo $$ > "$LOCAL_DIR/local-up.pid"
  # One place for every log; these point into the dirs the other scripts and keadm own.
  ln -s "$CLUSTER_DIR/logs" "$LOGS/cluster"
  ln -s "$CONTAINERD_DIR/containerd.log" "$LOGS/containerd.log"
  ln -s "$CLOUD_ROOT/var/log/kubeedge/cloudcore.log" "$LOGS/cloudcore.log"
  ln -s "$EDGE_ROOT/var/log/kubeedge/edgecore.log" "$LOGS/edgecore.log"
  ln -s "$EDGE_ROOT/var/log/pods" "$LOGS/pods"
  trap 'echo >&2; log "stopping"; teardown 0' INT TERM HUP
  trap 'teardown $?' EXIT
  t0=$(now)

  # Cached after the first run; built before anything starts, so a build error leaves nothing running.
  run "$TETHER_ROOT/hack/build-images.sh"
  # setsid keeps the daemons these start out of the terminal's process group: a Ctrl-C reaches only this
  # script, which then stops them in order. keadm starts its daemons in their own sessions too.
  run setsid "$CLUSTER" up
  log "keadm init (log: $LOGS/keadm.log)"
  keadm_step init init --root "$CLOUD_ROOT" --kube-config "$KUBECONFIG_FILE" --advertise-address 127.0.0.1 \
    --no-systemd --cloudcore-binary "$BIN_DIR/cloudcore"
  log "cloudcore running (pid $(cat "$(pidfile cloudcore)")), log: $LOGS/cloudcore.log"
  run setsid "$CONTAINERD" up   # also imports the images
  tok=$("$BIN_DIR/keadm" gettoken --kube-config "$KUBECONFIG_FILE") || die "keadm gettoken failed"
  log "keadm join $EDGE_NODE"
  keadm_step join join --root "$EDGE_ROOT" --cloudcore-ipport 127.0.0.1:10000 --token "$tok" \
    --edgenode-name "$EDGE_NODE" --remote-runtime-endpoint "unix://$CONTAINERD_SOCK" --with-mqtt \
    --no-systemd --edgecore-binary "$BIN_DIR/edgecore" --kube-config "$KUBECONFIG_FILE" \
    --set modules.edged.nodeIP=127.0.0.1 --set "modules.edged.tailoredKubeletConfig.cgroupRoot=$POD_CGROUP_PARENT"
  log "edgecore running (pid $(cat "$(pidfile edgecore)")), log: $LOGS/edgecore.log"
  wait_node_ready
  deploy_counter

  cat <<EOT

Tether is up ($(since "$t0")s): control plane, cloudcore (keadm init), containerd, edge node $EDGE_NODE (keadm join).
$(printf '  %s\n' "${DEMO_LINES[@]}")
  kubectl:  export KUBECONFIG=$KUBECONFIG_FILE PATH=$TOOLS_BIN:\$PATH
            kubectl get nodes,pods -o wide
  keadm:    $BIN_DIR/keadm debug get --root $EDGE_ROOT pod    (the edge's own database)
  logs:     $LOGS/{cloudcore,edgecore,containerd,web-controller-app,keadm}.log,
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

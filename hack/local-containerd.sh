#!/usr/bin/env bash
# Runs a private containerd (Debian's containerd + runc) for edge pods, isolated from any system containerd: its
# own root, state, socket, runc root and opt dir, and empty CNI dirs (edge pods here use the host network).
#   hack/local-containerd.sh up      start it, then import $OUTPUT/images/*.tar when hack/build-images.sh made them
#   hack/local-containerd.sh down    remove all pods, stop containerd, unmount and remove what is left; idempotent
#   hack/local-containerd.sh status
#   hack/local-containerd.sh env     print CONTAINER_RUNTIME_ENDPOINT=unix://... for eval
# Several instances (one per edge node, per test) coexist with their own CONTAINERD_DIR and POD_CGROUP_PARENT.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

CONTAINERD_DIR=${CONTAINERD_DIR:-$OUTPUT/containerd}
CONTAINERD_SOCK=${CONTAINERD_SOCK:-$CONTAINERD_DIR/containerd.sock}
# The pods' cgroup parent, as the CRI client sets it (edged: kuberuntime Options.CgroupParent; tests: their own).
# containerd removes only container cgroups; pod-level ones are the kubelet's, and `down` removes what is left.
POD_CGROUP_PARENT=${POD_CGROUP_PARENT:-/tether-pods}
# Must name exactly an image we import (hack/build-images.sh), or the CRI plugin tries to pull it from a registry.
PAUSE_IMAGE=${PAUSE_IMAGE:-docker.io/tether/pause:3.10}
case $CONTAINERD_DIR in /*/*) ;; *) die "CONTAINERD_DIR=$CONTAINERD_DIR: want an absolute dir at least two levels deep (down deletes it)" ;; esac
CONFIG=$CONTAINERD_DIR/config.toml
PID_FILE=$CONTAINERD_DIR/containerd.pid
LOG=$CONTAINERD_DIR/containerd.log

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [ "${s:0:1}" != Z ]; }   # zombies count as dead
pid() { cat "$PID_FILE" 2>/dev/null || true; }
# The recorded PID counts only while it is still our containerd: PIDs get reused after a reboot or a crash.
running() { local p; p=$(pid); [ -n "$p" ] && alive "$p" && grep -qsF -- "$CONFIG" "/proc/$p/cmdline"; }
ctr_() { ctr -a "$CONTAINERD_SOCK" -n k8s.io "$@"; }

stop_pid() {
  local p=$1 i
  kill "$p" 2>/dev/null || return 0
  for i in $(seq 1 100); do alive "$p" || return 0; sleep 0.1; done
  log "$p did not stop on SIGTERM within 10s; killing"; kill -9 "$p" 2>/dev/null || true
}

need() { command -v "$1" >/dev/null || die "$1 is missing: run hack/install-deps.sh (Debian package $2)"; }

# config writes `containerd config default` with our edits, then checks each edit landed: a containerd whose
# default config is laid out differently must fail here, not later with a pull or a runc error.
config() {
  local d=$CONTAINERD_DIR line
  containerd config default | sed \
    -e "s#^root = .*#root = \"$d/root\"#" \
    -e "s#^state = .*#state = \"$d/state\"#" \
    -e "s#^  address = \"/run/containerd/containerd.sock\"#  address = \"$CONTAINERD_SOCK\"#" \
    -e "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#" \
    -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
    -e "s#SystemdCgroup = .*#SystemdCgroup = false#" \
    -e "s#^            Root = \"\"#            Root = \"$d/runc\"#" \
    -e "s#^    path = \"/opt/containerd\"#    path = \"$d/opt\"#" \
    -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"$d/cni/bin\"#" \
    -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$d/cni/net.d\"#" \
    > "$CONFIG.tmp" || die "containerd config default failed"
  # Why each edit: restrict_oom_score_adj because root here lacks CAP_SYS_RESOURCE (runc otherwise fails with
  # "can't get final child's PID from pipe: EOF"); cgroupfs because PID 1 is not systemd; runc Root and the
  # rest so nothing is shared with a system containerd.
  for line in "root = \"$d/root\"" "state = \"$d/state\"" "address = \"$CONTAINERD_SOCK\"" \
    "sandbox_image = \"$PAUSE_IMAGE\"" "restrict_oom_score_adj = true" "SystemdCgroup = false" \
    "Root = \"$d/runc\"" "path = \"$d/opt\"" "bin_dir = \"$d/cni/bin\"" "conf_dir = \"$d/cni/net.d\""; do
    grep -qF "$line" "$CONFIG.tmp" || die "could not set '$line' in $(containerd --version): its default config changed; update config() in $0"
  done
  mv "$CONFIG.tmp" "$CONFIG"
}

cmd_up() {
  need containerd containerd; need ctr containerd; need runc runc
  # sun_path holds 108 bytes; a longer path fails later with an obscure bind error.
  [ ${#CONTAINERD_SOCK} -lt 100 ] || die "socket path $CONTAINERD_SOCK is too long for a unix socket: set CONTAINERD_DIR to a shorter dir"
  if running; then log "containerd already running (pid $(pid)) on $CONTAINERD_SOCK"; return 0; fi
  local t; t=$(now)
  mkdir -p "$CONTAINERD_DIR"/{root,state,runc,opt,cni/bin,cni/net.d} "$(dirname "$CONTAINERD_SOCK")"
  config
  nohup containerd --config "$CONFIG" > "$LOG" 2>&1 &
  echo $! > "$PID_FILE"
  local i
  for i in $(seq 1 300); do
    ctr -a "$CONTAINERD_SOCK" version >/dev/null 2>&1 && break
    alive "$(pid)" || { tail -n 30 "$LOG" >&2; die "containerd exited during start; log: $LOG"; }
    [ "$i" -lt 300 ] || { tail -n 30 "$LOG" >&2; die "containerd not ready after 30s; log: $LOG"; }
    sleep 0.1
  done
  log "containerd ready in $(since "$t")s on $CONTAINERD_SOCK (pid $(pid))"
  if [ -f "$OUTPUT/images/pause.tar" ]; then
    "$TETHER_ROOT/hack/build-images.sh" import "$CONTAINERD_SOCK"
  else
    log "WARNING: no images in $OUTPUT/images: pods cannot start until you run hack/build-images.sh --import $CONTAINERD_SOCK"
  fi
}

# remove_pods kills every task in k8s.io and deletes the containers through containerd, so the shims exit: they
# outlive containerd and would keep the pods running. CRI's own records go with the state dir afterwards.
remove_pods() {
  local ids id i
  ids=$(ctr_ tasks ls -q 2>/dev/null) || return 0
  for id in $ids; do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  # The CRI plugin deletes a task as soon as it sees it exit; delete only what it has not got to.
  for i in $(seq 1 50); do [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && break; sleep 0.1; done
  for id in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks delete -f "$id" >/dev/null 2>&1 || log "WARNING: could not delete task $id"
  done
  ids=$(ctr_ containers ls -q 2>/dev/null) || return 0
  [ -z "$ids" ] || ctr_ containers delete $ids >/dev/null 2>&1 || log "WARNING: could not delete containers: $ids"
  [ -z "$ids" ] || log "removed $(wc -w <<<"$ids") containers (sandboxes included)"
}

# pod_cgroups lists the pod cgroup dirs under POD_CGROUP_PARENT in every hierarchy (cgroup v1 controllers,
# name=systemd and the v2 "unified" mount of a hybrid host, or a pure v2 host), children first.
pod_cgroups() {
  local parent=${POD_CGROUP_PARENT#/} c
  [ -n "$parent" ] || return 0
  for c in /sys/fs/cgroup/*/"$parent" /sys/fs/cgroup/"$parent"; do
    [ -d "$c" ] && find "$c" -depth -type d
  done
  return 0
}

# kill_leftovers handles a containerd that died with pods running: it kills the processes still in our pod
# cgroups and the shims serving our socket, found by their exact -address argument.
kill_leftovers() {
  local d p
  for d in $(pod_cgroups); do
    [ -f "$d/cgroup.procs" ] || continue
    for p in $(cat "$d/cgroup.procs"); do kill -9 "$p" 2>/dev/null || true; done
  done
  # A cgroup cannot be removed until its killed processes are gone.
  for p in $(seq 1 30); do
    [ -z "$(for d in $(pod_cgroups); do cat "$d/cgroup.procs" 2>/dev/null; done)" ] && break; sleep 0.1
  done
  # grep -l over all cmdlines is one process; the checks then keep only shims whose -address is exactly ours.
  local args
  for p in $(grep -lsF -- "$CONTAINERD_SOCK" /proc/[0-9]*/cmdline 2>/dev/null); do
    mapfile -d '' -t args 2>/dev/null < "$p" || continue
    [[ "${args[0]:-}" == *containerd-shim* && " ${args[*]} " == *" -address $CONTAINERD_SOCK "* ]] || continue
    p=${p#/proc/}; p=${p%/cmdline}
    log "killing leftover shim $p"; kill -9 "$p" 2>/dev/null || true
  done
}

cmd_down() {
  local t d m; t=$(now)
  if running; then
    remove_pods
    stop_pid "$(pid)"
  fi
  kill_leftovers
  # Rootfs overlays and sandbox /dev/shm mounts stay when a pod was not removed through containerd; innermost first.
  # The trailing slash keeps a sibling such as containerd-2 from matching.
  for m in $(awk -v d="$CONTAINERD_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: could not unmount $m"
  done
  for d in $(pod_cgroups); do
    rmdir "$d" 2>/dev/null || log "WARNING: could not remove cgroup $d (processes left?)"
  done
  # Never rm -rf through a mount that is still there: it could reach outside our dir.
  if awk -v d="$CONTAINERD_DIR/" 'index($5, d) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    die "mounts remain under $CONTAINERD_DIR (see above); unmount them and run $0 down again"
  fi
  rm -rf "$CONTAINERD_DIR"
  [ "$(dirname "$CONTAINERD_SOCK")" = "$CONTAINERD_DIR" ] || rm -f "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
  log "containerd down in $(since "$t")s"
}

cmd_status() {
  if running; then echo "containerd: running (pid $(pid)) on $CONTAINERD_SOCK"; ctr_ images ls -q; else echo "containerd: stopped"; return 1; fi
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export CONTAINER_RUNTIME_ENDPOINT=unix://$CONTAINERD_SOCK" ;;
  *) echo "usage: $0 up | down | status | env" >&2; exit 2 ;;
esac

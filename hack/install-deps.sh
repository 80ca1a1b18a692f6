#!/usr/bin/env bash
# Installs the Debian packages the tests and the local run need, when they are missing. Idempotent and quiet
# when everything is there already. Needs root (or passwordless sudo) only when something must be installed.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

# command -> package that provides it
declare -A PKG_OF=(
  [openssl]=openssl
  [curl]=curl
  [gcc]=gcc
  # edge pods: a private containerd (hack/local-containerd.sh) with the runc runtime; ctr imports our images
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [mosquitto]=mosquitto [mosquitto_pub]=mosquitto-clients [mosquitto_sub]=mosquitto-clients  # MQTT broker for eventbus tests
  [systemd-analyze]=systemd  # checks the unit files keadm installs
  [ip]=iproute2 [nsenter]=util-linux  # a second edge "host" in its own network namespace (keadm two-node test)
  [chromium]=chromium  # headless browser for the counter demo's browser test (never a downloaded one)
  # hack/crossbuild.sh: cgo cross compilers for linux/arm64 and linux/arm (armhf); g++ is listed for what it
  # depends on, libc6-dev-{arm64,armhf}-cross (headers, libc.a), which gcc only recommends and which has no command
  [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu [aarch64-linux-gnu-g++]=g++-aarch64-linux-gnu
  [arm-linux-gnueabihf-gcc]=gcc-arm-linux-gnueabihf [arm-linux-gnueabihf-g++]=g++-arm-linux-gnueabihf
  [qemu-aarch64]=qemu-user [qemu-arm]=qemu-user  # runs the cross-built binaries in tests/integration/crossbuild_test.go
)

missing=()
for cmd in "${!PKG_OF[@]}"; do
  pkg=${PKG_OF[$cmd]}
  # one package can provide several commands (containerd, ctr): ask apt for it once
  command -v "$cmd" >/dev/null 2>&1 || [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
log "installing Debian packages: ${missing[*]}"
# Debian's daemons would start on their default ports; we run our own instances, so keep theirs off.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
fi
$SUDO apt-get update -qq || die "apt-get update failed"
$SUDO env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || die "apt-get install ${missing[*]} failed"

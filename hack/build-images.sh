#!/usr/bin/env bash
# Builds the container images edge pods and tests run, from our own Go binaries: no Docker, no registry.
# Each image is one static binary in one layer (hack/tools/mkimage), written as a docker-archive tar that
# `ctr images import` loads into containerd's k8s.io namespace, where the CRI plugin finds it without pulling.
#   hack/build-images.sh [--import SOCKET]   build $IMAGES_DIR/<image>.tar (cached), then optionally import
#   hack/build-images.sh import SOCKET       import the built tars into the containerd at SOCKET
#   hack/build-images.sh refs                print NAME=REF for each image
# A tar is rebuilt only when its binary, reference, architecture or the packer changed. TETHER_IMAGES="pause
# counter-mapper" limits every command to those images: static builds share no cache with cgo ones, so a cold
# web-controller-app (client-go) costs minutes that a run which does not use it can skip.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

IMAGES_DIR=${IMAGES_DIR:-$OUTPUT/images}
ARCH=${ARCH:-}   # GOARCH of the images; default: the Go toolchain's
# CRI stores and looks up images by their normalised name, so "tether/pause:3.10" (edgecore's default
# podSandboxImage) is "docker.io/tether/pause:3.10" in containerd. We write that full name into the tar so the
# imported name, containerd's sandbox_image (hack/local-containerd.sh) and edgecore's default are one image.
PAUSE_IMAGE=${PAUSE_IMAGE:-docker.io/tether/pause:3.10}
TESTAPP_IMAGE=${TESTAPP_IMAGE:-docker.io/tether/testapp:v1}
COUNTER_WEB_IMAGE=${COUNTER_WEB_IMAGE:-docker.io/tether/web-controller-app:v1}
COUNTER_MAPPER_IMAGE=${COUNTER_MAPPER_IMAGE:-docker.io/tether/counter-mapper:v1}
# image name -> Go package and reference
declare -A PKG_OF=([pause]=./build/images/pause [testapp]=./build/images/testapp
  [web-controller-app]=./examples/counter-demo/web-controller-app [counter-mapper]=./examples/counter-demo/counter-mapper)
# beego (the web app) prints a warning at start unless it finds conf/app.conf, even an empty one.
declare -A EXTRA_OF=([web-controller-app]="-empty-file /conf/app.conf")
declare -A REF_OF=([pause]=$PAUSE_IMAGE [testapp]=$TESTAPP_IMAGE
  [web-controller-app]=$COUNTER_WEB_IMAGE [counter-mapper]=$COUNTER_MAPPER_IMAGE)
read -r -a IMAGES <<< "${TETHER_IMAGES:-pause testapp web-controller-app counter-mapper}"
for img in "${IMAGES[@]}"; do
  [ -n "${PKG_OF[$img]:-}" ] || die "TETHER_IMAGES: unknown image $img (known: ${!PKG_OF[*]})"
done

need_go() { command -v go >/dev/null || die "go is missing: install the Go toolchain (go.mod names the version)"; }

build() {
  need_go
  local bin=$IMAGES_DIR/bin t img key out
  [ -n "$ARCH" ] || ARCH=$(go env GOARCH)
  mkdir -p "$bin"
  cd "$TETHER_ROOT"
  t=$(now)
  # The packer runs here, so it is built for this host, not for $ARCH.
  go build -trimpath -buildvcs=false -o "$bin/mkimage" ./hack/tools/mkimage || die "building hack/tools/mkimage failed"
  for img in "${IMAGES[@]}"; do
    # Static (CGO_ENABLED=0): the image has no libc. -buildvcs=false keeps the binary, and so the cache key,
    # independent of the git state.
    CGO_ENABLED=0 GOOS=linux GOARCH=$ARCH go build -trimpath -buildvcs=false -ldflags '-s -w' \
      -o "$bin/$img-$ARCH" "${PKG_OF[$img]}" || die "building ${PKG_OF[$img]} for linux/$ARCH failed"
  done
  log "binaries built in $(since "$t")s"
  for img in "${IMAGES[@]}"; do
    out=$IMAGES_DIR/$img.tar
    key=$(cat "$bin/$img-$ARCH" "$bin/mkimage" | sha256sum | cut -d' ' -f1)" ${REF_OF[$img]} $ARCH ${EXTRA_OF[$img]:-}"
    if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
      log "$img: $out is current (${REF_OF[$img]})"; continue
    fi
    t=$(now)
    # shellcheck disable=SC2086 # EXTRA_OF holds flags
    "$bin/mkimage" -bin "$bin/$img-$ARCH" -entrypoint "/$img" -arch "$ARCH" -ref "${REF_OF[$img]}" -out "$out" ${EXTRA_OF[$img]:-} \
      || die "packing $img into $out failed"
    echo "$key" > "$out.key"
    log "$img: packed ${REF_OF[$img]} ($ARCH, $(du -k "$out" | cut -f1) KiB) in $(since "$t")s"
  done
}

import() {
  local sock=${1#unix://} img out t output
  [ -n "$sock" ] || die "import needs the containerd socket: $0 import /path/to/containerd.sock"
  command -v ctr >/dev/null || die "ctr is missing: run hack/install-deps.sh (Debian package containerd)"
  [ -S "$sock" ] || die "no containerd socket at $sock: start one with hack/local-containerd.sh up"
  for img in "${IMAGES[@]}"; do
    out=$IMAGES_DIR/$img.tar
    [ -f "$out" ] || die "$out is missing: run hack/build-images.sh"
    t=$(now)
    # k8s.io is the namespace the CRI plugin reads; import also unpacks the layer for the default snapshotter.
    output=$(ctr -a "$sock" -n k8s.io images import "$out" 2>&1) || die "ctr images import $out into $sock failed: $output"
    log "$img: imported ${REF_OF[$img]} into $sock in $(since "$t")s"
  done
}

case ${1:-} in
  ""|build) build ;;
  --import) [ $# -eq 2 ] || die "usage: $0 --import SOCKET"; build; import "$2" ;;
  import) [ $# -eq 2 ] || die "usage: $0 import SOCKET"; import "$2" ;;
  refs) for img in "${IMAGES[@]}"; do echo "$img=${REF_OF[$img]}"; done ;;
  *) echo "usage: $0 [build] [--import SOCKET] | import SOCKET | refs" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Cross-builds the release binaries for Linux with cgo (edgecore needs it for github.com/mattn/go-sqlite3).
#   hack/crossbuild.sh [ARCH ...]     ARCH: amd64 arm64 arm (default: all three)
# Output: $CROSS_OUT/linux-ARCH/{edgecore,keadm[,cloudcore],version}   (CROSS_OUT defaults to _output/cross)
#   edgecore and keadm for every ARCH; cloudcore for amd64 and arm64 only (it runs next to the API server).
#   arm is ARMv7 hard-float (GOARM=7, Debian's armhf); arm64 is aarch64.
#
# The binaries are STATIC (-extldflags -static against Debian's cross glibc): an edge host needs no particular
# glibc (a dynamic build from Debian 12 would refuse to start on a host with glibc < 2.34, e.g. Debian 11 or
# Raspberry Pi OS bullseye), and qemu-user runs them without -L. Static glibc cannot load NSS modules, so we
# build with the pure-Go resolver and user lookup (tags netgo, osusergo: /etc/hosts, DNS and /etc/passwd, which
# is what edge hosts use), and without SQLite's extension loading (sqlite_omit_load_extension: no dlopen).
#
# Version stamping is the Makefile's: VERSION, COMMIT and BUILD_DATE from the environment, else git describe /
# the short commit / the commit date (or SOURCE_DATE_EPOCH when set). So the binaries are byte-for-byte
# reproducible (-trimpath, -buildvcs=false) and a re-run on unchanged sources relinks nothing.
#
# C compilers come from Debian: gcc-aarch64-linux-gnu + libc6-dev-arm64-cross, gcc-arm-linux-gnueabihf +
# libc6-dev-armhf-cross (hack/install-deps.sh, i.e. `make deps`, installs them). arm links with ld.gold (from
# binutils-arm-linux-gnueabihf, which the compiler pulls in): see extld_for below.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

CROSS_OUT=${CROSS_OUT:-$OUTPUT/cross}
CROSS_TAGS=${CROSS_TAGS:-netgo osusergo sqlite_omit_load_extension}
ALL_ARCHES=(amd64 arm64 arm)

# GOARCH -> GNU triplet of Debian's cross toolchain, and the Debian architecture name of its packages
declare -A TRIPLET=([amd64]=x86_64-linux-gnu [arm64]=aarch64-linux-gnu [arm]=arm-linux-gnueabihf)
declare -A DEBARCH=([amd64]=amd64 [arm64]=arm64 [arm]=armhf)

cd "$TETHER_ROOT"
command -v go >/dev/null || die "go is missing: install the Go toolchain (go.mod names the version)"

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=("${ALL_ARCHES[@]}")
for a in "${arches[@]}"; do
  [ -n "${TRIPLET[$a]:-}" ] || die "unknown architecture '$a' (want one of: ${ALL_ARCHES[*]})"
done

COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
VERSION=${VERSION:-$(git describe --tags --match 'v*' --dirty 2>/dev/null || echo "v0.1.0-dev+$COMMIT")}
if [ -z "${BUILD_DATE:-}" ]; then
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    BUILD_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" -Iseconds)
  else   # the commit date, as the Makefile: a changing date would relink every binary on every run
    BUILD_DATE=$(git log -1 --format=%cI 2>/dev/null || echo unknown)
  fi
fi
LDFLAGS="-s -w -X github.com/tether-edge/tether/pkg/version.gitVersion=$VERSION \
-X github.com/tether-edge/tether/pkg/version.gitCommit=$COMMIT \
-X github.com/tether-edge/tether/pkg/version.buildDate=$BUILD_DATE -linkmode external"

host_arch=$(go env GOHOSTARCH)

# cc_for ARCH: the C compiler for ARCH, or die naming the Debian packages that provide what is missing.
cc_for() {
  local arch=$1 triplet=${TRIPLET[$1]} cc pkgs libc
  if [ "$arch" = "$host_arch" ]; then
    cc=${CC_NATIVE:-gcc}; pkgs="gcc libc6-dev"
  else
    cc=$triplet-gcc; pkgs="gcc-$triplet libc6-dev-${DEBARCH[$arch]}-cross"
    [ "$arch" = amd64 ] && pkgs="gcc-x86-64-linux-gnu libc6-dev-amd64-cross"
  fi
  command -v "$cc" >/dev/null \
    || die "C compiler $cc for linux/$arch is missing: apt-get install $pkgs (or run make deps)"
  # A static link needs the target's libc.a (the libc6-dev package); gcc alone only recommends it.
  libc=$("$cc" -print-file-name=libc.a)
  [ "$libc" != libc.a ] && [ -f "$libc" ] \
    || die "$cc has no C library for linux/$arch (libc.a): apt-get install ${pkgs#* } (or run make deps)"
  echo "$cc"
}

# extld_for ARCH: flags for the external (C) linker.
# arm: GNU ld.bfd 2.40 (Debian 12) drops the Thumb bit of R_ARM_IRELATIVE targets (glibc's memcpy/memchr ifunc
# resolvers) once they lie more than 16 MiB past the start of .text, so a static binary with more than ~16 MiB
# of code dies with SIGSEGV before main (keadm does; edgecore is at 15 MiB). ld.gold links it correctly.
extld_for() {
  local arch=$1 cc=$2 flags=-static gold
  if [ "$arch" = arm ]; then
    gold=$("$cc" -print-prog-name=ld.gold)   # the path gcc -fuse-ld=gold runs, or the bare name if none
    [ -x "$gold" ] \
      || die "ld.gold for $cc is missing: apt-get install binutils-${TRIPLET[$arch]} (or run make deps)"
    flags+=" -fuse-ld=gold"
  fi
  echo "$flags"
}

# Check every compiler before building anything: fail in a second, not after a ten-minute build.
declare -A CC_OF=() EXTLD_OF=()
for a in "${arches[@]}"; do CC_OF[$a]=$(cc_for "$a"); EXTLD_OF[$a]=$(extld_for "$a" "${CC_OF[$a]}"); done

log "cross-building $VERSION (commit $COMMIT, $BUILD_DATE) for: ${arches[*]}"
total=$(now)
summary=()
for arch in "${arches[@]}"; do
  out=$CROSS_OUT/linux-$arch
  bins=(edgecore keadm)
  case $arch in amd64|arm64) bins+=(cloudcore) ;; esac
  pkgs=(); for b in "${bins[@]}"; do pkgs+=("./cmd/$b"); done
  mkdir -p "$out"
  t=$(now)
  # One go build for all binaries of an arch: they share compilation and link in parallel. Go writes each
  # binary only if its build ID changed: a run with nothing changed takes about a second.
  env CGO_ENABLED=1 GOOS=linux GOARCH="$arch" GOARM=7 CC="${CC_OF[$arch]}" \
    go build -trimpath -buildvcs=false -tags "$CROSS_TAGS" \
      -ldflags "$LDFLAGS -extldflags '${EXTLD_OF[$arch]}'" -o "$out/" "${pkgs[@]}" \
    || die "building ${bins[*]} for linux/$arch failed"
  echo "$VERSION" > "$out/version.tmp" && mv "$out/version.tmp" "$out/version"
  secs=$(since "$t")
  log "linux/$arch built in ${secs}s"
  for b in "${bins[@]}"; do
    size=$(stat -c %s "$out/$b")
    summary+=("$(printf '  %-14s %-10s %10d bytes  %6.1f MiB' "linux/$arch" "$b" "$size" "$(awk -v s="$size" 'BEGIN{print s/1048576}')")")
  done
done
log "done in $(since "$total")s; binaries in ${CROSS_OUT#"$TETHER_ROOT"/}/:"
printf '%s\n' "${summary[@]}" >&2

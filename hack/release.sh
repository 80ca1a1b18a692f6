#!/usr/bin/env bash
# Builds the release archives: hack/crossbuild.sh, then one tarball per architecture and a checksum file.
#   hack/release.sh [ARCH ...]        ARCH: amd64 arm64 arm (default: all three)
# Output ($RELEASE_OUT, default _output/release, emptied first):
#   tether-VERSION-linux-ARCH.tar.gz  one top-level folder tether-VERSION-linux-ARCH/ holding
#       edgecore keadm [cloudcore]    static binaries (cloudcore for amd64/arm64 only)
#       version                       VERSION, one line
#       systemd/NAME.service          build/tools/NAME.service for each binary NAME in the archive
#       crds/*.yaml  README.md  LICENSE (when the repository has one)
#   SHA256SUMS                        `sha256sum -c SHA256SUMS` checks them
# Reproducible: binaries stamped with the commit date (SOURCE_DATE_EPOCH, default the commit's time), and tar
# with sorted names, that same mtime, owner 0:0, normalised modes, and gzip -n; re-runs give identical archives.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

RELEASE_OUT=${RELEASE_OUT:-$OUTPUT/release}
CROSS_OUT=${CROSS_OUT:-$OUTPUT/cross}
cd "$TETHER_ROOT"

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 arm)

# One version and one instant for the binaries and the archives; crossbuild.sh takes them from here.
export COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
export VERSION=${VERSION:-$(git describe --tags --match 'v*' --dirty 2>/dev/null || echo "v0.1.0-dev+$COMMIT")}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export BUILD_DATE=${BUILD_DATE:-$(date -u -d "@$SOURCE_DATE_EPOCH" -Iseconds)}
export CROSS_OUT

"$TETHER_ROOT/hack/crossbuild.sh" "${arches[@]}"

command -v sha256sum >/dev/null || die "sha256sum is missing (Debian package coreutils)"
t=$(now)
rm -rf "$RELEASE_OUT"
stage=$RELEASE_OUT/.stage
mkdir -p "$stage"
archives=()
for arch in "${arches[@]}"; do
  name=tether-$VERSION-linux-$arch
  dir=$stage/$name
  src=$CROSS_OUT/linux-$arch
  mkdir -p "$dir/crds"
  [ "$(cat "$src/version")" = "$VERSION" ] || die "$src holds $(cat "$src/version"), not $VERSION"
  bins=()
  for b in edgecore keadm cloudcore; do
    [ -f "$src/$b" ] || continue
    install -m 0755 "$src/$b" "$dir/$b"; bins+=("$b")
  done
  install -m 0644 "$src/version" "$dir/version"
  for unit in build/tools/*.service; do
    [ -f "$unit" ] || continue
    # A unit for a binary this archive lacks (cloudcore on arm) stays out.
    [[ " ${bins[*]} " == *" $(basename "$unit" .service) "* ]] || continue
    mkdir -p "$dir/systemd"; install -m 0644 "$unit" "$dir/systemd/"
  done
  install -m 0644 crds/*.yaml "$dir/crds/"
  install -m 0644 README.md "$dir/"
  for lic in LICENSE LICENSE.md LICENSE.txt COPYING; do
    if [ -f "$lic" ]; then install -m 0644 "$lic" "$dir/"; fi
  done
  find "$dir" -type d -exec chmod 0755 {} +
  out=$RELEASE_OUT/$name.tar.gz
  tar --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -C "$stage" -cf - "$name" | gzip -n > "$out"
  archives+=("$name.tar.gz")
done
rm -rf "$stage"
(cd "$RELEASE_OUT" && sha256sum "${archives[@]}" > SHA256SUMS)
log "release $VERSION packed in $(since "$t")s: ${RELEASE_OUT#"$TETHER_ROOT"/}/"
(cd "$RELEASE_OUT" && for a in "${archives[@]}"; do
  printf '  %-48s %6.1f MiB\n' "$a" "$(awk -v s="$(stat -c %s "$a")" 'BEGIN{print s/1048576}')"
done; echo "  SHA256SUMS") >&2

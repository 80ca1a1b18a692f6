#!/usr/bin/env bash
# Checks formatting, go vet, and that generated code and CRDs match the API types.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$TETHER_ROOT"
rc=0

unformatted=$(gofmt -l $(git ls-files --cached --others --exclude-standard '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then log "gofmt needed on:"; echo "$unformatted" >&2; rc=1; fi

go vet ./... || rc=1
go vet -tags integration ./tests/... || rc=1

# Regenerate into a scratch copy and compare, so a stale checkout is reported, not silently fixed.
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
cp -r crds pkg "$scratch/"
"$TETHER_ROOT/hack/update-codegen.sh"
if ! diff -r "$scratch/crds" crds >/dev/null || ! diff -r "$scratch/pkg" pkg >/dev/null; then
  log "generated files are stale: run 'make generate' and commit the result"
  diff -r "$scratch/crds" crds >&2 || true; diff -r "$scratch/pkg" pkg >&2 || true
  rm -rf crds pkg; cp -r "$scratch/crds" "$scratch/pkg" .   # leave the tree as it was
  rc=1
fi
exit $rc

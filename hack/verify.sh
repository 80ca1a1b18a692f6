#!/usr/bin/env bash
# Checks formatting, go vet, and that generated code and CRDs match the API types.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$TETHER_ROOT"
rc=0

unformatted=$(gofmt -l $(git ls-files --cached --others --exclude-standard '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then log "gofmt needed on:"; echo "$unformatted" >&2; rc=1; fi

go vet ./... || rc=1
go vet -tags integration ./tests/... ./examples/... || rc=1

# Snapshot the generated files, regenerate, compare. Only generated files are touched: after a failure the tree
# holds the fresh output, ready to commit.
generated() { find crds pkg/apis -name 'zz_generated*.go' -o -path 'crds/*.yaml' | sort; }
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
generated | while read -r f; do mkdir -p "$scratch/$(dirname "$f")"; cp "$f" "$scratch/$f"; done
"$TETHER_ROOT/hack/update-codegen.sh"
stale=0
while read -r f; do cmp -s "$f" "$scratch/$f" || { log "stale: $f"; stale=1; }; done < <(generated)
[ "$(cd "$scratch" && find . -type f | wc -l)" = "$(generated | wc -l)" ] || { log "generated file set changed"; stale=1; }
if [ $stale = 1 ]; then log "generated files were stale and have been regenerated: review and commit them"; rc=1; fi
exit $rc

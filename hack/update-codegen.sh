#!/usr/bin/env bash
# Regenerates deepcopy functions and CRD manifests (crds/) from the API types in pkg/apis.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$TETHER_ROOT"
"$TETHER_ROOT/hack/build-tools.sh" controller-gen
# allowDangerousTypes: device models have float properties, as in KubeEdge.
"$TOOLS_BIN/controller-gen" object paths=./pkg/apis/devices/... paths=./pkg/apis/reliablesyncs/... \
  crd:allowDangerousTypes=true output:crd:artifacts:config=crds

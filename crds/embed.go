// Package crds holds the CRD manifests generated from pkg/apis (make generate). They are embedded so that keadm
// installs exactly the CRDs of the binaries it ships, without the source tree.
package crds

import "embed"

// FS holds every CRD manifest of this directory.
//
//go:embed *.yaml
var FS embed.FS

// Package scheme builds the runtime scheme cloudcore and the tests use: the Kubernetes built-ins plus Tether's
// (KubeEdge's) API groups.
package scheme

import (
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	reliablesyncsv1alpha1 "github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
)

// New returns a fresh scheme; callers own it.
func New() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme,
		devicesv1alpha2.AddToScheme, reliablesyncsv1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("building scheme: %w", err)
		}
	}
	return s, nil
}

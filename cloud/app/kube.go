package app

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
)

// restConfig builds the API server connection from kubeAPIConfig; with neither master nor kubeConfig set it is
// the in-cluster config, as when cloudcore runs as a Deployment.
func restConfig(cfg v1alpha1.KubeAPIConfig) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags(cfg.Master, cfg.KubeConfig)
	if err != nil {
		return nil, fmt.Errorf("building API server client (master %q, kubeConfig %q): %w", cfg.Master, cfg.KubeConfig, err)
	}
	rc.QPS = float32(cfg.QPS)
	rc.Burst = int(cfg.Burst)
	rc.UserAgent = "cloudcore"
	// CRDs have no protobuf encoding; controller-runtime's client picks JSON for them itself, so the configured
	// content type only applies to built-in types.
	rc.ContentType = cfg.ContentType
	return rc, nil
}

package app

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
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
	// For the typed client of built-in types; controller-runtime gets crdRestConfig of this.
	rc.ContentType = cfg.ContentType
	return rc, nil
}

// crdRestConfig is rc for controller-runtime's client and cache, which serve our CRDs (ObjectSync,
// ClusterObjectSync, Device, DeviceModel) besides built-in types. CRDs have no protobuf encoding: given
// contentType protobuf, controller-runtime uses it for every type, and every CRD request fails ("does not
// implement the protobuf marshalling interface"). With no content type it picks protobuf for each built-in type
// it knows and JSON for the rest, which is what kubeAPIConfig.contentType=protobuf means.
func crdRestConfig(rc *rest.Config) *rest.Config {
	c := rest.CopyConfig(rc)
	if c.ContentType == runtime.ContentTypeProtobuf {
		c.ContentType = ""
		c.AcceptContentTypes = ""
	}
	return c
}

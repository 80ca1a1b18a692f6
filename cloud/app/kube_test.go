package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	reliablesyncsv1alpha1 "github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	tetherscheme "github.com/tether-edge/tether/pkg/apis/scheme"
)

// echoAPIServer answers every request with the JSON body it was sent (or {} for reads) and records the
// Content-Type and Accept of each request by path.
type echoAPIServer struct {
	mu      sync.Mutex
	content map[string]string
	accept  map[string]string
}

func (s *echoAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.content[r.Method+" "+r.URL.Path] = r.Header.Get("Content-Type")
	s.accept[r.Method+" "+r.URL.Path] = r.Header.Get("Accept")
	s.mu.Unlock()
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(r.URL.Path, "/apis/") && ct != "" && ct != runtime.ContentTypeJSON {
		// What the API server says to a protobuf body for a custom resource.
		http.Error(w, "the body of a custom resource must be JSON", http.StatusUnsupportedMediaType)
		return
	}
	if len(body) == 0 || ct != runtime.ContentTypeJSON {
		body = []byte("{}")
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// ObjectSync, ClusterObjectSync and Device have no protobuf encoding, and keadm init leaves
// kubeAPIConfig.contentType at protobuf: controller-runtime must send and ask for JSON for them, and keep
// protobuf for built-in types.
func TestCRDsUseJSON(t *testing.T) {
	tests := []struct {
		contentType string
		// wantBuiltin is the Content-Type of a built-in write.
		wantBuiltin string
	}{
		{contentType: v1alpha1.ContentTypeProtobuf, wantBuiltin: runtime.ContentTypeProtobuf},
		{contentType: v1alpha1.ContentTypeJSON, wantBuiltin: runtime.ContentTypeJSON},
	}
	for _, tc := range tests {
		t.Run(tc.contentType, func(t *testing.T) {
			srv := &echoAPIServer{content: map[string]string{}, accept: map[string]string{}}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			kubeconfig := writeKubeconfig(t, ts.URL)
			cfg := v1alpha1.NewDefaultCloudCore().KubeAPIConfig
			cfg.KubeConfig = kubeconfig
			cfg.ContentType = tc.contentType
			rc, err := restConfig(*cfg)
			if err != nil {
				t.Fatal(err)
			}
			scheme, err := tetherscheme.New()
			if err != nil {
				t.Fatal(err)
			}
			// A fixed mapper: the fake answers no discovery.
			mapper := meta.NewDefaultRESTMapper(nil)
			for _, k := range []struct {
				gvk   schema.GroupVersionKind
				scope meta.RESTScope
			}{
				{reliablesyncsv1alpha1.SchemeGroupVersion.WithKind("ObjectSync"), meta.RESTScopeNamespace},
				{reliablesyncsv1alpha1.SchemeGroupVersion.WithKind("ClusterObjectSync"), meta.RESTScopeRoot},
				{devicesv1alpha2.SchemeGroupVersion.WithKind("Device"), meta.RESTScopeNamespace},
				{corev1.SchemeGroupVersion.WithKind("ConfigMap"), meta.RESTScopeNamespace},
			} {
				mapper.Add(k.gvk, k.scope)
			}
			c, err := client.NewWithWatch(crdRestConfig(rc), client.Options{Scheme: scheme, Mapper: mapper})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			crds := []client.Object{
				&reliablesyncsv1alpha1.ObjectSync{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "edge1.uid"}},
				&reliablesyncsv1alpha1.ClusterObjectSync{ObjectMeta: metav1.ObjectMeta{Name: "edge1.uid"}},
				&devicesv1alpha2.Device{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "counter"}},
			}
			for _, obj := range crds {
				if err := c.Create(ctx, obj); err != nil {
					t.Errorf("create %T: %v", obj, err)
				}
				if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
					t.Errorf("get %T: %v", obj, err)
				}
			}
			if err := c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cm"}}); err != nil {
				t.Errorf("create ConfigMap: %v", err)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for req, ct := range srv.content {
				want := runtime.ContentTypeJSON
				if strings.Contains(req, "/configmaps") {
					want = tc.wantBuiltin
				}
				if strings.HasPrefix(req, "POST") && ct != want {
					t.Errorf("%s sent %q, want %q", req, ct, want)
				}
				if accept := srv.accept[req]; !strings.Contains(req, "/configmaps") && strings.Contains(accept, "protobuf") {
					t.Errorf("%s asked for %q, want JSON", req, accept)
				}
			}
			if len(srv.content) != 2*len(crds)+1 {
				t.Errorf("requests = %v, want %d", srv.content, 2*len(crds)+1)
			}
		})
	}
}

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "c",
		"clusters": []any{map[string]any{"name": "c", "cluster": map[string]any{"server": server}}},
		"contexts": []any{map[string]any{"name": "c", "context": map[string]any{"cluster": "c", "user": "u"}}},
		"users":    []any{map[string]any{"name": "u", "user": map[string]any{"token": "t"}}},
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

package cloud

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/crds"
)

// fieldManager owns what keadm applies, so a later init (an upgrade) takes over its own fields cleanly.
const fieldManager = "keadm"

// crd is one embedded manifest: its name and the JSON body to apply.
type crd struct {
	name string
	body []byte
}

// embeddedCRDs returns the CRDs built into keadm, in file order.
func embeddedCRDs() ([]crd, error) {
	names, err := fs.Glob(crds.FS, "*.yaml")
	if err != nil {
		return nil, err
	}
	var out []crd
	for _, file := range names {
		data, err := crds.FS.ReadFile(file)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("embedded %s: %w", file, err)
			}
			body, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return nil, fmt.Errorf("embedded %s: %w", file, err)
			}
			if string(bytes.TrimSpace(body)) == "null" {
				continue // an empty document between separators
			}
			var obj apiextensionsv1.CustomResourceDefinition
			if err := json.Unmarshal(body, &obj); err != nil {
				return nil, fmt.Errorf("embedded %s: %w", file, err)
			}
			if obj.Kind != "CustomResourceDefinition" || obj.Name == "" {
				return nil, fmt.Errorf("embedded %s: not a named CustomResourceDefinition", file)
			}
			out = append(out, crd{name: obj.Name, body: body})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no CRDs embedded in keadm")
	}
	return out, nil
}

// applyCRDs server-side applies each CRD: it creates missing ones and updates ours without clobbering fields
// other managers set (a conversion webhook, say).
func applyCRDs(ctx context.Context, c *clients, list []crd) error {
	force := true
	for _, d := range list {
		_, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, d.name, types.ApplyPatchType, d.body,
			metav1.PatchOptions{FieldManager: fieldManager, Force: &force})
		if err != nil {
			return fmt.Errorf("apply CRD %s: %w", d.name, err)
		}
	}
	return nil
}

// waitEstablished waits until the API server serves every CRD: cloudcore's informers fail on a resource that
// is not served yet.
func waitEstablished(ctx context.Context, c *clients, list []crd, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, d := range list {
		for {
			obj, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, d.name, metav1.GetOptions{})
			if err == nil {
				established, problem := crdState(obj)
				if established {
					break
				}
				if problem != "" {
					return fmt.Errorf("CRD %s is not served: %s", d.name, problem)
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not Established within %s", d.name, timeout)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func crdState(obj *apiextensionsv1.CustomResourceDefinition) (established bool, problem string) {
	for _, cond := range obj.Status.Conditions {
		switch {
		case cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue:
			established = true
		case cond.Type == apiextensionsv1.NamesAccepted && cond.Status == apiextensionsv1.ConditionFalse:
			problem = cond.Message
		}
	}
	return established, problem
}

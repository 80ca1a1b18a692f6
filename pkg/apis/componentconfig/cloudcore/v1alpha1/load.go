package v1alpha1

import (
	"github.com/tether-edge/tether/pkg/util/configload"
)

// Load reads the cloudcore config at path: defaults first, then the file
// decoded strictly over them, then validation. Errors name the file and,
// where there is one, the offending field.
func Load(path string) (*CloudCore, error) {
	c := NewDefaultCloudCore()
	err := configload.Load(path, c, configload.Type{
		APIVersion: APIVersion,
		Kind:       Kind,
		Accepted:   acceptedKubeEdgeFields(),
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

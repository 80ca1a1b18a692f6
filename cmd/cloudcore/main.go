// Command cloudcore runs the cloud half of Tether next to the Kubernetes API server: CloudHub, EdgeController,
// DeviceController and SyncController (cloud/app).
package main

import (
	"os"

	"github.com/tether-edge/tether/cloud/app"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

func main() {
	os.Exit(configflag.Execute(app.NewCloudCoreCommand()))
}

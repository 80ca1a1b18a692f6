// Command edgecore runs the edge half of Tether on an edge host: EdgeHub, MetaManager, Edged, DeviceTwin, EventBus
// and ServiceBus (edge/app).
package main

import (
	"os"

	"github.com/tether-edge/tether/edge/app"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

func main() {
	os.Exit(configflag.Execute(app.NewEdgeCoreCommand()))
}

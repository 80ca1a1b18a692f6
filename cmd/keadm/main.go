// Command keadm installs, joins, resets and inspects Tether clouds and edge nodes (keadm/app).
package main

import (
	"os"

	"github.com/tether-edge/tether/keadm/app"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

func main() {
	os.Exit(configflag.Execute(app.NewKeadmCommand()))
}

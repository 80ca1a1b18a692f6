package main

import (
	"os"

	"github.com/tether-edge/tether/edge/app"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

func main() {
	os.Exit(configflag.Execute(app.NewEdgeCoreCommand()))
}

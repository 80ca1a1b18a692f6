package main

import (
	"os"

	"github.com/tether-edge/tether/cloud/app"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

func main() {
	os.Exit(configflag.Execute(app.NewCloudCoreCommand()))
}

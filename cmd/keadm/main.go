package main

import (
	"os"

	"github.com/tether-edge/tether/keadm/app"
	"github.com/tether-edge/tether/pkg/util/configflag"
)

func main() {
	os.Exit(configflag.Execute(app.NewKeadmCommand()))
}

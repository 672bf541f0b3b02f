//go:build !cgo || !linux

package main

import (
	"encoding/json"
	"os"

	"github.com/fleetpass/fleetpass/internal/diskreset"
)

func main() {
	const why = "fleetpass-diskreset was built without cgo or not for Linux: rebuild it with CGO_ENABLED=1 on Linux with libguestfs-dev"
	if len(os.Args) > 1 && os.Args[1] == "--probe" {
		json.NewEncoder(os.Stdout).Encode(diskreset.Probe{Problem: why})
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(diskreset.Result{Code: diskreset.CodeFailed, Message: why})
	os.Exit(1)
}

// Command fleetpass is the fleetpass server (`fleetpass serve`) and its
// command-line client; package cli holds all of it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetpass/fleetpass/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, cli.NewRoot(os.Stdin, os.Stdout, os.Stderr))
	stop()
	os.Exit(code)
}

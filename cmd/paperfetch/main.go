// Command paperfetch downloads batches of papers (PDFs): `paperfetch get` runs a coordinator
// and fetchers in-process for one list; the other subcommands drive a running coordinator.
// Run `paperfetch help` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/paperfetch/paperfetch/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the command stops cleanly; a second one kills it at once.
	context.AfterFunc(ctx, stop)
	code := cli.Main(ctx, os.Args[1:], cli.OSEnv())
	stop()
	os.Exit(code)
}

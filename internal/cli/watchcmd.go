package cli

import "context"

const watchHelp = `
Follows a batch on a coordinator with the same progress display as 'paperfetch get' until it
is completed or cancelled, then prints its summary. Exit status: 0 all papers succeeded, 1 some
failed or were cancelled, 3 interrupted (the batch goes on).`

func (a *app) watch(ctx context.Context, args []string) error {
	fs := a.newFlagSet("watch", "[flags] BATCH", watchHelp)
	r := addRemoteFlags(fs)
	quiet := fs.Bool("quiet", false, "print only errors and the summary")
	asJSON := fs.Bool("json", false, "print progress as JSON lines on standard output")
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("want exactly one BATCH id")
	}
	if *quiet && *asJSON {
		return usagef("--quiet and --json cannot be combined")
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return a.follow(ctx, r, client, rest[0], displayMode(*quiet, *asJSON), 0)
}

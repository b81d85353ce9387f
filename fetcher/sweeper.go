package fetcher

import "context"

// sweepSpool removes the spool files not modified for Config.SpoolMaxAge (see spool.sweep) and
// returns how many it removed.
func (f *Fetcher) sweepSpool(ctx context.Context) int {
	sp := f.dl.spool
	n, err := sp.sweep(f.clk.Now().Add(-f.cfg.SpoolMaxAge))
	if n > 0 {
		f.m.spoolRemoved.WithLabelValues("swept").Add(float64(n))
		f.log.InfoContext(ctx, "removed old spool files", "dir", sp.dir, "count", n, "max_age", f.cfg.SpoolMaxAge.String())
	}
	if err != nil {
		f.log.WarnContext(ctx, "sweeping old spool files", "dir", sp.dir, "err", err)
	}
	return n
}

// startSweeper starts the goroutine that runs sweepSpool every Config.SpoolSweepInterval on the
// fetcher's clock until ctx ends or the returned stop function is called; stop waits for it.
func (f *Fetcher) startSweeper(ctx context.Context) (stop func()) {
	tick := f.clk.NewTicker(f.cfg.SpoolSweepInterval)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C():
				n := f.sweepSpool(ctx)
				if f.afterSweep != nil {
					f.afterSweep(n)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

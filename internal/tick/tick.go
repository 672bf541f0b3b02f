// Package tick runs periodic background work: the sweeps, syncs and
// prunes of a long-running server.
package tick

import (
	"context"
	"time"
)

// Every calls f each interval until ctx ends; the first call is one
// interval after the start. A pass that overruns delays the next tick
// rather than stacking up behind it (time.Ticker drops missed ticks).
func Every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

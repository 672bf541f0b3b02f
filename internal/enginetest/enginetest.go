// Package enginetest starts a real engine for the tests of the packages
// that drive one without a whole server (the engine's own, the agent
// channel's), so that its wiring and its stop live in one place.
package enginetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Fast is the engine's default configuration with a test's waits: polls
// and retries in milliseconds, machines given seconds, not minutes.
func Fast() engine.Config {
	c := engine.DefaultConfig()
	c.PollInterval, c.RetryBase, c.FetchPoll = 5*time.Millisecond, time.Millisecond, 10*time.Millisecond
	c.ShutdownTimeout, c.BootTimeout, c.GuestTimeout = 5*time.Second, 10*time.Second, 10*time.Second
	return c
}

// Start starts the event bus and an engine over st with cfg. At the end of
// t it calls cancel (which must end ctx) and waits for the engine to stop.
func Start(t testing.TB, ctx context.Context, cancel context.CancelFunc, st *store.Store, drivers engine.Drivers,
	seal *sealer.Sealer, bus *events.Bus, m *metrics.Metrics, log *slog.Logger, cfg engine.Config) *engine.Engine {
	t.Helper()
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(ctx, st, drivers, seal, bus, m, log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go bus.Run(ctx)
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = eng.Stop(sctx)
	})
	return eng
}

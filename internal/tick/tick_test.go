package tick_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/testutil"
	"github.com/fleetpass/fleetpass/internal/tick"
)

func TestEveryCallsUntilTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick.Every(ctx, time.Millisecond, func(context.Context) { calls.Add(1) })
	}()
	if !testutil.Eventually(10*time.Second, func() bool { return calls.Load() >= 3 }) {
		t.Fatal("f was not called repeatedly")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after the context ended")
	}
}

package store

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retry runs fn, at most attempts times in all, again after a short
// random pause while it fails with an error IsRetryable accepts. It is
// the retry loop of InTx, for callers that run transactions of their own
// on the database (the simulated fleet's table).
func Retry(ctx context.Context, attempts int, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt >= attempts || !IsRetryable(err) {
			return err
		}
		pause := time.Duration(rand.Int64N(int64(attempt) * int64(5*time.Millisecond)))
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return err
		}
	}
}

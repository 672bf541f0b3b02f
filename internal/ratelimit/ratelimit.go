// Package ratelimit limits requests per principal (an API key or a console
// user), shared by every front door: a key gets one budget whether it
// calls the native API, a documented dialect or several at once, so
// switching dialects does not multiply its rate.
//
// A Limiter is either this process's memory (Memory: one server on
// SQLite) or the database (Database: every replica of a PostgreSQL
// installation shares one budget per principal, so N replicas allow the
// configured rate, not N times it). Both follow one contract, checked by
// one conformance test.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter takes one request of a principal, arriving at a front door
// (a metrics label), from the principal's budget. When the budget is
// spent it reports false and how long until a request would be allowed,
// and the refused request takes nothing. A nil Limiter allows everything.
type Limiter interface {
	Allow(ctx context.Context, door, principal string) (retryAfter time.Duration, ok bool)
}

// Memory holds one token bucket per principal in this process. The zero
// Memory and a nil *Memory allow everything.
type Memory struct {
	rate  rate.Limit
	burst int
	// onLimited, if set, is called with the front door's name for each
	// refused request (a metric).
	onLimited func(door string)

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	l    *rate.Limiter
	used time.Time
}

// idle is how long a bucket is kept without use. A bucket idle that long
// is full again anyway, so dropping it forgets nothing.
const idle = 10 * time.Minute

// NewMemory makes a limiter allowing perSecond requests a second per
// principal with bursts of burst (at least 1). perSecond <= 0 disables
// limiting (a nil *Memory). onLimited may be nil.
func NewMemory(perSecond float64, burst int, onLimited func(door string)) *Memory {
	if perSecond <= 0 {
		return nil
	}
	return &Memory{rate: rate.Limit(perSecond), burst: max(burst, 1), onLimited: onLimited,
		buckets: make(map[string]*bucket)}
}

// Allow implements Limiter.
func (l *Memory) Allow(_ context.Context, door, principal string) (retryAfter time.Duration, ok bool) {
	if l == nil || l.buckets == nil {
		return 0, true
	}
	now := time.Now()
	l.mu.Lock()
	b, found := l.buckets[principal]
	if !found {
		b = &bucket{l: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[principal] = b
	}
	b.used = now
	l.sweep(now)
	l.mu.Unlock()

	res := b.l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		if l.onLimited != nil {
			l.onLimited(door)
		}
		return d, false
	}
	return 0, true
}

// sweep drops idle buckets, at most once a minute, so that the map holds
// the principals of the last minutes, not every principal ever seen.
func (l *Memory) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if now.Sub(b.used) > idle {
			delete(l.buckets, k)
		}
	}
}

// Package ratelimit limits requests per principal (an API key or a console
// user) with one token bucket each, shared by every front door: a key gets
// one budget whether it calls the native API, a documented dialect or
// several at once, so switching dialects does not multiply its rate.
//
// The buckets are this replica's memory, unlike replay state: a limit is a
// fairness measure, and N replicas allowing N times the rate is the
// operator's choice of N, whereas a replay accepted by a second replica
// would run a request twice.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter holds the buckets. The zero Limiter and a nil *Limiter allow
// everything.
type Limiter struct {
	rate  rate.Limit
	burst int
	// OnLimited, if set, is called with the front door's name for each
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

// New makes a limiter allowing perSecond requests a second per principal
// with bursts of burst (at least 1). perSecond <= 0 disables limiting.
// onLimited may be nil.
func New(perSecond float64, burst int, onLimited func(door string)) *Limiter {
	if perSecond <= 0 {
		return nil
	}
	return &Limiter{rate: rate.Limit(perSecond), burst: max(burst, 1), onLimited: onLimited,
		buckets: make(map[string]*bucket)}
}

// Allow takes one request of principal at door from its bucket. When the
// bucket is empty it reports false and how long until a request would be
// allowed, and the request takes nothing from the bucket.
func (l *Limiter) Allow(door, principal string) (retryAfter time.Duration, ok bool) {
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
func (l *Limiter) sweep(now time.Time) {
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

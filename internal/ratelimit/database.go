package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Backend is the database side of Database: one GCRA step on a shared
// row per key (store.TakeRate).
type Backend interface {
	// TakeRate admits one request of key if its theoretical arrival time,
	// advanced by interval, stays within burst intervals of now; it
	// returns how long until one would be admitted otherwise.
	TakeRate(ctx context.Context, key string, interval time.Duration, burst int) (retryAfter time.Duration, ok bool, err error)
}

// Database keeps the budgets in the database (a GCRA: one timestamp per
// principal, advanced by one statement per request), so that every
// replica draws on the same budget.
//
// A limit is a fairness measure, not a security boundary: when the
// database cannot answer, the request is allowed (fail open), counted by
// onError and logged at most once a minute, rather than refuse every
// client because of the limiter's own trouble.
type Database struct {
	backend   Backend
	interval  time.Duration
	burst     int
	onLimited func(door string)
	onError   func()
	log       *slog.Logger
	// timeout bounds the limiter's statement: a slow database delays a
	// request by at most this much before it is let through.
	timeout time.Duration

	mu     sync.Mutex
	warned time.Time
}

// NewDatabase makes a limiter over b allowing perSecond requests a second
// per principal with bursts of burst (at least 1). perSecond <= 0
// disables limiting (a nil *Database). onLimited and onError may be nil.
func NewDatabase(b Backend, perSecond float64, burst int, onLimited func(door string), onError func(), log *slog.Logger) *Database {
	if perSecond <= 0 {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Database{backend: b, interval: time.Duration(float64(time.Second) / perSecond), burst: max(burst, 1),
		onLimited: onLimited, onError: onError, log: log, timeout: 2 * time.Second}
}

// Allow implements Limiter.
func (l *Database) Allow(ctx context.Context, door, principal string) (time.Duration, bool) {
	if l == nil {
		return 0, true
	}
	tctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	d, ok, err := l.backend.TakeRate(tctx, principal, l.interval, l.burst)
	if err != nil {
		if ctx.Err() != nil {
			return 0, true // the client left; nothing to limit
		}
		if l.onError != nil {
			l.onError()
		}
		l.mu.Lock()
		warn := time.Since(l.warned) > time.Minute
		if warn {
			l.warned = time.Now()
		}
		l.mu.Unlock()
		if warn {
			l.log.Warn("the rate limiter cannot reach the database; requests are let through unlimited meanwhile", "err", err)
		}
		return 0, true
	}
	if !ok {
		if l.onLimited != nil {
			l.onLimited(door)
		}
		return max(d, time.Millisecond), false
	}
	return 0, true
}

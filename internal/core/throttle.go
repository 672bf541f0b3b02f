package core

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/fleetpass/fleetpass/internal/ratelimit"
)

// CodeRateLimited refuses a request of a principal that spent its rate
// budget; Details["retryAfterSeconds"] says when to come back. Each front
// door answers it in its own throttling format.
const CodeRateLimited = "RATE_LIMITED"

// SetRateLimiter makes Throttle use l (nil: no limit): this process's
// memory on SQLite, the database shared by every replica on PostgreSQL.
func (s *Service) SetRateLimiter(l ratelimit.Limiter) { s.limiter = l }

// Throttle takes one request of the authenticated principal p, arriving at
// the front door door (a metrics label: "native", "action", ...), from
// p's budget, which every front door shares. Every front door calls it
// right after authentication, before reading anything:
//
//	if err := svc.Throttle(ctx, p, "mydialect"); err != nil { return err }
func (s *Service) Throttle(ctx context.Context, p Principal, door string) error {
	if s.limiter == nil {
		return nil
	}
	d, ok := s.limiter.Allow(ctx, door, p.Kind+":"+p.ID)
	if ok {
		return nil
	}
	secs := int(math.Ceil(d.Seconds()))
	return &Error{Code: CodeRateLimited, Message: "too many requests for this key; retry later",
		Details: map[string]any{"retryAfterSeconds": max(secs, 1)}}
}

// RetryAfter is how long a CodeRateLimited error asks the client to wait,
// in whole seconds (at least one); zero for any other error.
func RetryAfter(err error) time.Duration {
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeRateLimited {
		return 0
	}
	secs, _ := e.Details["retryAfterSeconds"].(int)
	return time.Duration(max(secs, 1)) * time.Second
}

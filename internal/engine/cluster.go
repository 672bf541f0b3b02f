package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivertype"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Members is the cluster membership the engine works in (package cluster):
// this replica's id (River's client id, recorded in each job's
// attempted_by), every listed replica and whether it is alive, and
// whether this one may act.
type Members interface {
	ID() string
	Liveness(ctx context.Context) (map[string]bool, error)
	Trusted() bool
}

// ErrFenced is the cause of the cancellation of a self-fenced replica's
// executions.
var ErrFenced = errors.New("this replica fenced itself: its heartbeat could not be renewed")

// fence tracks the running executions of this process so a self-fencing
// replica can cancel them all at once, and refuses new ones while fenced.
type fence struct {
	mu     sync.Mutex
	fenced bool
	next   int
	execs  map[int]context.CancelCauseFunc
	// refused counts executions refused while fenced.
	refused int
}

// enter registers an execution; leave must be called when it ends. It
// fails while the replica is fenced.
func (f *fence) enter(ctx context.Context) (context.Context, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced {
		f.refused++
		return nil, nil, ErrFenced
	}
	if f.execs == nil {
		f.execs = make(map[int]context.CancelCauseFunc)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	f.next++
	id := f.next
	f.execs[id] = cancel
	return ctx, func() {
		f.mu.Lock()
		delete(f.execs, id)
		f.mu.Unlock()
		cancel(nil)
	}, nil
}

func (f *fence) set(fenced bool) (cancelled int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fenced = fenced
	if !fenced {
		return 0
	}
	for _, cancel := range f.execs {
		cancel(ErrFenced)
	}
	return len(f.execs)
}

func (f *fence) isFenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fenced
}

// Fence stops this replica acting on machines: it cancels every running
// execution (whose items another replica takes over once this one counts
// as dead) and refuses new ones until Unfence. The membership calls it when
// its heartbeat lapses.
func (e *Engine) Fence(reason error) {
	n := e.fence.set(true)
	e.log.Warn("engine fenced: running executions cancelled, no new ones until the heartbeat is renewed",
		"cancelled", n, "reason", reason)
}

// Superseded is how many of this engine's executions were stopped by
// their item's fencing token.
func (e *Engine) Superseded() int { return int(e.supersededN.Load()) }

// Refused is how many executions the engine refused while fenced.
func (e *Engine) Refused() int {
	e.fence.mu.Lock()
	defer e.fence.mu.Unlock()
	return e.fence.refused
}

// Unfence lets the replica work again.
func (e *Engine) Unfence() {
	e.fence.set(false)
	e.log.Info("engine unfenced: working again")
}

// fencedPower checks that the execution still holds its item (and that the
// replica is not fenced) before every action on the machine; reading the
// power state needs no check.
type fencedPower struct {
	driver.Power
	check func(ctx context.Context) error
}

func (p fencedPower) Shutdown(ctx context.Context, ref driver.Ref) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	return p.Power.Shutdown(ctx, ref)
}

func (p fencedPower) Stop(ctx context.Context, ref driver.Ref) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	return p.Power.Stop(ctx, ref)
}

func (p fencedPower) Start(ctx context.Context, ref driver.Ref) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	return p.Power.Start(ctx, ref)
}

// errStale wraps the reason an execution must stop: superseded by another
// or fenced. It is not a driver error, so the step loop hands it back to
// River as a failed execution (see work).
type errStale struct{ err error }

func (e errStale) Error() string { return "execution stopped: " + e.err.Error() }
func (e errStale) Unwrap() error { return e.err }

// TokenFresh is how long after taking an item's fencing token a trusted
// replica acts without reading the token back.
//
// Another execution takes an item only from a replica the others treat as
// dead, which a trusted one is not (its heartbeat's window is still open,
// and Trusted is asked first), or after River's rescue delay, minutes
// after the execution began. So in the moments after BeginExecution the
// read could only return the token just taken: an online reset, which acts
// once at once, saves a statement, and an execution that waits (a
// shutdown, a boot) reads the token before every later action.
const TokenFresh = 500 * time.Millisecond

// checkExec fails when w's execution may no longer act: the replica is
// fenced or a newer execution took the item.
func (e *Engine) checkExec(ctx context.Context, w *store.ItemWork) error {
	if e.fence.isFenced() || (e.members != nil && !e.members.Trusted()) {
		return errStale{ErrFenced}
	}
	// Without a membership (an engine of its own, in tests) nothing says
	// the replica is trusted: the token is always read back.
	if e.members != nil && !w.TokenAt.IsZero() && time.Since(w.TokenAt) < TokenFresh {
		return nil
	}
	if err := e.store.CheckExecution(ctx, e.store.DB, w); err != nil {
		if errors.Is(err, store.ErrSuperseded) {
			return errStale{err}
		}
		return err
	}
	return nil
}

// retryPolicy retries a failed execution (database trouble, a cancelled or
// superseded execution) after 1 s, doubling up to 15 s: River's default
// (attempt⁴ seconds) would leave an item taken over twice waiting minutes.
// Transient machine errors are the step loop's own, with the engine's
// backoff.
type retryPolicy struct{}

func (retryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	n := min(len(job.Errors), 4)
	d := time.Second << n
	d = min(d, 15*time.Second)
	return time.Now().Add(d/2 + rand.N(d/2+1))
}

// reapLoop resumes, every few seconds, the running jobs of replicas that
// are dead or unknown: a replica killed mid-execution leaves its jobs
// running in River's table, and River's own rescuer would wait for
// RescueStuckJobsAfter (minutes). It stays as the backstop.
func (e *Engine) reapLoop(ctx context.Context, r *reaper) {
	for {
		// 2-3 s, jittered so replicas started together do not reap in step.
		d := 2*time.Second + rand.N(time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if _, err := e.reapPass(ctx, r, "orphaned by a dead replica", reapPage); err != nil && ctx.Err() == nil {
			e.log.Warn("resume dead replicas' work", "err", err)
		}
	}
}

// reapPage is how many running jobs the reaper reads at a time.
const reapPage = 500

// reaper is what the reaper remembers between its passes.
type reaper struct {
	// alive and dead are the replicas seen alive since, and dead at, the
	// last read of the running jobs: one of the first not alive any more,
	// or a dead one not among the second, is a death to act on.
	alive, dead map[string]bool
	// read is when the running jobs were last read whole; zero before the
	// first read, and again after a pass this replica could not trust.
	read time.Time
}

// reapPass makes the running jobs whose last attempt belongs to a dead or
// unknown replica available again, and reports whether it read the
// running jobs. It never takes a live replica's jobs, this one's
// included. It reads them on its first pass, when a replica died since the
// last read (a replica stays listed dead until it is forgotten, so even
// one that joined and died between two passes is seen), and every
// ReaperBackstop; otherwise a pass costs one read of the membership.
func (e *Engine) reapPass(ctx context.Context, r *reaper, why string, page int) (bool, error) {
	if e.members != nil && !e.members.Trusted() {
		// A replica that cannot renew its own heartbeat cannot judge the
		// others' either; once it can again, it reads afresh.
		r.read = time.Time{}
		return false, nil
	}
	alive, dead := map[string]bool{e.river.ID(): true}, map[string]bool{}
	if e.members != nil {
		live, err := e.members.Liveness(ctx)
		if err != nil {
			return false, err
		}
		for id, ok := range live {
			if ok {
				alive[id] = true
			} else if id != e.river.ID() {
				dead[id] = true
			}
		}
	}
	died := false
	for id := range r.alive {
		died = died || !alive[id]
	}
	for id := range dead {
		died = died || !r.dead[id]
	}
	now := time.Now()
	if !died && !r.read.IsZero() && now.Sub(r.read) < e.cfg.ReaperBackstop {
		// Nobody died: the jobs were live replicas' at the last read, and
		// whatever began since is a live replica's too. Replicas that
		// joined count from now on.
		for id := range alive {
			r.alive[id] = true
		}
		return false, nil
	}
	if err := e.reapRead(ctx, alive, why, page); err != nil {
		// r keeps the last read's view: the next pass sees the death too.
		return true, err
	}
	r.alive, r.dead, r.read = alive, dead, now
	return true, nil
}

// reapRead reads the running jobs, page by page, and resumes the item
// jobs of owners not in alive.
func (e *Engine) reapRead(ctx context.Context, alive map[string]bool, why string, page int) error {
	exec := e.river.Driver().GetExecutor()
	now := time.Now().UTC()
	var after int64
	// What the pass saw: running item jobs of live replicas left alone, and
	// of dead ones resumed (a debug line, which tests wait on).
	var leftAlone, resumed int
	for full := true; full; {
		stuck, err := exec.JobGetStuck(ctx, &riverdriver.JobGetStuckParams{
			AfterID: after, Max: page, StuckHorizon: now.Add(time.Hour),
		})
		if err != nil {
			return fmt.Errorf("find orphaned jobs: %w", err)
		}
		// A short page is the end. Paging on until an empty one chased the
		// jobs that began since the last page (under load they start in id
		// order all the time): another read of live replicas' jobs each
		// time, seven or more a pass with three busy replicas. What began
		// after the page was read is a live replica's.
		full = len(stuck) == page
		p := riverdriver.JobRescueManyParams{StuckHorizon: now.Add(time.Hour)}
		owners := map[string]int{}
		for _, j := range stuck {
			after = j.ID
			owner := ""
			if n := len(j.AttemptedBy); n > 0 {
				owner = j.AttemptedBy[n-1]
			}
			if j.Kind != (ItemArgs{}).Kind() {
				continue
			}
			if alive[owner] {
				leftAlone++
				continue
			}
			owners[owner]++
			p.ID = append(p.ID, j.ID)
			p.Error = append(p.Error, fmt.Appendf(nil, `{"at":%q,"attempt":%d,"error":%q,"trace":""}`,
				now.Format(time.RFC3339Nano), j.Attempt, why+" ("+owner+")"))
			p.FinalizedAt = append(p.FinalizedAt, nil)
			p.ScheduledAt = append(p.ScheduledAt, now)
			p.State = append(p.State, string(rivertype.JobStateAvailable))
		}
		if len(p.ID) == 0 {
			continue
		}
		if _, err := exec.JobRescueMany(ctx, &p); err != nil {
			return fmt.Errorf("resume orphaned jobs: %w", err)
		}
		e.reaped.Add(float64(len(p.ID)))
		resumed += len(p.ID)
		for owner, n := range owners {
			e.log.Info("resumed work left by a dead replica", "dead_replica", owner, "jobs", n)
		}
	}
	e.log.Debug("reaper pass", "live_replicas_jobs", leftAlone, "resumed", resumed)
	return nil
}

// guard runs one execution of an item inside the fence, turning a
// superseded or fenced end into an error River retries (never nil: a stale
// execution that completed its job could complete it under the live
// execution's feet, whose later snooze or retry would then be lost).
func (e *Engine) guard(ctx context.Context, fn func(ctx context.Context) error) error {
	if e.members != nil && !e.members.Trusted() {
		return river.JobSnooze(time.Second)
	}
	ctx, leave, err := e.fence.enter(ctx)
	if err != nil {
		// Fenced: hand the job back without an attempt; another replica
		// (or this one once it trusts its heartbeat again) takes it.
		return river.JobSnooze(time.Second)
	}
	defer leave()
	err = fn(ctx)
	if errors.Is(err, store.ErrSuperseded) {
		e.supersededN.Add(1)
		e.supersededMetric.Inc()
		e.log.Warn("execution superseded: another execution took the item; this one stops", "err", err)
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrFenced) && err != nil {
		return errStale{ErrFenced}
	}
	return err
}

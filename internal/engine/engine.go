// Package engine runs operations: it advances each item of an operation
// (one instance's part) through the steps of a password reset or a power
// action, on durable River jobs.
//
// Every item is one River job. The job re-reads the item's durable step on
// each execution and drives it forward, recording its intent before each
// action and re-reading the machine's real power state on every pass, so a
// job resumed after a crash re-issues only idempotent actions (a second
// shutdown request, a second start, the same password set again) and never
// leaves a machine stopped that was to be started again. Waits (a shutdown
// in progress, a boot) are polled within one execution for a while, then
// handed back to River as a snooze, so a long wait holds no worker.
package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Config tunes the engine. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// ShutdownTimeout bounds a graceful shutdown before a forced stop (with
	// consent) or a SHUTDOWN_TIMEOUT failure (without).
	ShutdownTimeout time.Duration
	// StopTimeout bounds a forced stop.
	StopTimeout time.Duration
	// BootTimeout bounds a start.
	BootTimeout time.Duration
	// GuestTimeout bounds the wait for the guest channel after a boot.
	GuestTimeout time.Duration
	// PollInterval is how often a waiting item reads the machine's state.
	PollInterval time.Duration
	// ExecBudget is how long one job execution may wait before it snoozes.
	ExecBudget time.Duration
	// MaxWorkers bounds items worked at once by this process.
	MaxWorkers int
	// PerHostLimit bounds items worked at once against one host.
	PerHostLimit int
	// MaxAttempts bounds retries of transient driver errors per item.
	MaxAttempts int
	// RetryBase is the first backoff after a transient error; it doubles.
	RetryBase time.Duration
	// FetchPoll is how often River looks for new jobs when not woken.
	// Zero: every 50 ms on SQLite, and every 250 ms on PostgreSQL, where
	// any replica's insert wakes every replica by notification. The poll
	// still starts what nothing announces (a snoozed or retried job due
	// within seconds, a dead replica's job resumed), so it stays short;
	// every 50 ms, each idle replica ran twenty fetches a second.
	FetchPoll time.Duration
	// Members is the cluster this engine works in: its id is River's
	// client id, and the reaper resumes the jobs of replicas it does not
	// list alive. Nil: a process alone on its database (every other
	// client id is a previous run's).
	Members Members
	// ReaperBackstop is how long the reaper goes without reading the
	// running jobs while no replica died (default 30 s). Every pass (2-3
	// s) reads the live replicas; only a death, or this backstop, makes it
	// read every running job, which with many running items was the
	// largest cost a replica added to the database. The backstop catches
	// what no death announces: a job whose owner was never a member, or
	// one a cut-off replica's transaction committed late.
	ReaperBackstop time.Duration
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		ShutdownTimeout: 60 * time.Second,
		StopTimeout:     60 * time.Second,
		BootTimeout:     5 * time.Minute,
		GuestTimeout:    5 * time.Minute,
		PollInterval:    250 * time.Millisecond,
		ExecBudget:      20 * time.Second,
		MaxWorkers:      200,
		PerHostLimit:    100,
		MaxAttempts:     6,
		RetryBase:       500 * time.Millisecond,
		ReaperBackstop:  30 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.ShutdownTimeout, d.ShutdownTimeout)
	set(&c.StopTimeout, d.StopTimeout)
	set(&c.BootTimeout, d.BootTimeout)
	set(&c.GuestTimeout, d.GuestTimeout)
	set(&c.PollInterval, d.PollInterval)
	set(&c.ExecBudget, d.ExecBudget)
	set(&c.RetryBase, d.RetryBase)
	set(&c.ReaperBackstop, d.ReaperBackstop)
	if c.MaxWorkers <= 0 {
		c.MaxWorkers = d.MaxWorkers
	}
	if c.PerHostLimit <= 0 {
		c.PerHostLimit = d.PerHostLimit
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	return c
}

// Drivers maps driver names (as instances name them) to implementations.
type Drivers struct {
	Power map[string]driver.Power
	Guest map[string]driver.Guest
	// HostDriver names the driver whose links name a registered host
	// (libvirt), AgentDriver the guest channel whose links name an
	// enrolled agent: before acting, the engine checks that such a link
	// is one of the instance's own tenant. BMCDriver powers bare-metal
	// servers through a BMC registered for the instance.
	HostDriver, AgentDriver, BMCDriver string
}

// Links names the drivers whose links store.LinkOwnerProblem checks.
func (d Drivers) Links() store.LinkDrivers {
	return store.LinkDrivers{Host: d.HostDriver, Agent: d.AgentDriver, BMC: d.BMCDriver}
}

// Engine executes operation items.
type Engine struct {
	store   *store.Store
	drivers Drivers
	sealer  *sealer.Sealer
	bus     *events.Bus
	metrics *metrics.Metrics
	log     *slog.Logger
	cfg     Config

	river *river.Client[*sql.Tx]

	members          Members
	fence            fence
	supersededMetric interface{ Inc() }
	supersededN      atomic.Int64
	reaped           interface{ Add(float64) }

	hostMu sync.Mutex
	hosts  map[string]chan struct{}
	slots  sharedSlots // slots.go
}

// ItemArgs are the arguments of an item's job.
type ItemArgs struct {
	OperationID string `json:"op"`
	InstanceID  string `json:"ins"`
}

// Kind is River's job kind for items.
func (ItemArgs) Kind() string { return "fleetpass_item" }

const queue = "items"

// diskEditMax bounds one disk edit (the helper's whole run): about 10 s on
// an idle 2-core host under software emulation, 40 s measured on a loaded
// one, a few seconds with KVM.
const diskEditMax = 3 * time.Minute

// New makes an engine over s and migrates River's tables in s's database.
func New(ctx context.Context, s *store.Store, d Drivers, seal *sealer.Sealer, bus *events.Bus, m *metrics.Metrics,
	log *slog.Logger, cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	e := &Engine{store: s, drivers: d, sealer: seal, bus: bus, metrics: m, log: log, cfg: cfg,
		hosts: make(map[string]chan struct{}), members: cfg.Members, supersededMetric: m.Superseded, reaped: m.Reaped}
	var clientID string
	if cfg.Members != nil {
		clientID = cfg.Members.ID()
	}
	poll := cfg.FetchPoll
	if poll <= 0 {
		poll = 50 * time.Millisecond
		if s.Dialect() == store.Postgres {
			poll = 250 * time.Millisecond
		}
	}
	drv := riverDriver(s)
	if err := Migrate(ctx, s, log); err != nil {
		return nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(e.work))
	client, err := river.NewClient(drv, &river.Config{
		ID:                clientID,
		RetryPolicy:       retryPolicy{},
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: cfg.MaxWorkers}},
		Workers:           workers,
		Logger:            quietLogger(log),
		FetchCooldown:     min(poll, 5*time.Millisecond),
		FetchPollInterval: poll,
		// One execution waits at most ExecBudget before snoozing, or runs
		// one disk edit (bounded by diskEditMax: a libguestfs appliance
		// under software emulation on a loaded host), so a job running
		// much longer than that belongs to a dead process.
		JobTimeout:                  cfg.ExecBudget + diskEditMax + time.Minute,
		RescueStuckJobsAfter:        cfg.ExecBudget + diskEditMax + 2*time.Minute,
		MaxAttempts:                 1000,
		CompletedJobRetentionPeriod: time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	e.river = client
	return e, nil
}

// Migrate brings River's tables in s's database up to date. rivermigrate
// takes no lock of its own, so servers starting together on one PostgreSQL
// database take turns.
func Migrate(ctx context.Context, s *store.Store, log *slog.Logger) error {
	migrator, err := rivermigrate.New(riverDriver(s), &rivermigrate.Config{Logger: quietLogger(log)})
	if err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	err = s.WithSessionLock(ctx, store.MigrationLock, "river", func(ctx context.Context) error {
		_, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	return nil
}

// riverDriver is River's driver for s's database. On PostgreSQL it is
// riverdatabasesql with a pgx listener: jobs and transactions go through
// the same database/sql handle as the store (so an operation's items and
// their jobs commit in one *sql.Tx), and LISTEN/NOTIFY wakes the workers
// of a job inserted by another process.
func riverDriver(s *store.Store) riverdriver.Driver[*sql.Tx] {
	if s.Dialect() == store.Postgres {
		return riverdatabasesql.NewWithPgxListener(s.DB, s.ListenerPool())
	}
	return riversqlite.New(s.DB)
}

// quietLogger keeps River's own info chatter out of the operator's log.
func quietLogger(log *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{log.Handler(), slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

// Start resumes the jobs that dead replicas (a killed previous run, on
// SQLite) left running, and starts working and reaping: every few seconds
// the jobs of replicas that died since are resumed too.
func (e *Engine) Start(ctx context.Context) error {
	r := new(reaper)
	if _, err := e.reapPass(ctx, r, "orphaned by a stopped server", reapPage); err != nil {
		return err
	}
	if err := e.river.Start(ctx); err != nil {
		return fmt.Errorf("river start: %w", err)
	}
	go e.reapLoop(ctx, r)
	return nil
}

// Stop stops fetching jobs and waits for running executions to end; past
// ctx's deadline it cancels them (their items resume at the next start).
func (e *Engine) Stop(ctx context.Context) error {
	err := e.river.Stop(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return e.river.StopAndCancel(cctx)
	}
	return err
}

// EnqueueUnfinished gives every unfinished item of s's database (as seen
// by tx) a fresh job, in tx, without starting an engine: an installation
// moved to another database (`fleetpass db copy`) resumes its items when
// its server starts. It returns the number of items enqueued.
func EnqueueUnfinished(ctx context.Context, s *store.Store, tx *sql.Tx) (int, error) {
	items, err := s.UnfinishedItems(ctx, tx)
	if err != nil || len(items) == 0 {
		return 0, err
	}
	// An insert-only client: no queues, no workers.
	client, err := river.NewClient(riverDriver(s), &river.Config{})
	if err != nil {
		return 0, fmt.Errorf("river client: %w", err)
	}
	e := &Engine{river: client}
	for i := 0; i < len(items); {
		j := i
		var ids []string
		for ; j < len(items) && items[j].OperationID == items[i].OperationID; j++ {
			ids = append(ids, items[j].InstanceID)
		}
		if err := e.EnqueueTx(ctx, tx, items[i].OperationID, ids); err != nil {
			return 0, err
		}
		i = j
	}
	return len(items), nil
}

// EnqueueTx inserts the jobs of an operation's items in the transaction that
// creates the operation, so an accepted operation always has its jobs.
func (e *Engine) EnqueueTx(ctx context.Context, tx *sql.Tx, opID string, instanceIDs []string) error {
	params := make([]river.InsertManyParams, len(instanceIDs))
	for i, id := range instanceIDs {
		params[i] = river.InsertManyParams{
			Args:       ItemArgs{OperationID: opID, InstanceID: id},
			InsertOpts: &river.InsertOpts{Queue: queue, MaxAttempts: 1000},
		}
	}
	if _, err := e.river.InsertManyFastTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue items: %w", err)
	}
	return nil
}

// QueueDepth counts items waiting for or in execution (for /metrics).
func (e *Engine) QueueDepth(ctx context.Context) (int, error) {
	var n int
	err := e.store.DB.QueryRowContext(ctx, `SELECT count(*) FROM river_job WHERE state IN ('available', 'running', 'retryable', 'scheduled')`).Scan(&n)
	return n, err
}

// SetHostLimit sets the bound on items worked at once against one host
// (key is "driver/host", as the engine groups machines), in place of
// Config.PerHostLimit. Items already holding a slot finish under the old
// bound.
func (e *Engine) SetHostLimit(key string, n int) {
	if n <= 0 {
		n = e.cfg.PerHostLimit
	}
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	if ch, ok := e.hosts[key]; ok && cap(ch) == n {
		return
	}
	e.hosts[key] = make(chan struct{}, n)
}

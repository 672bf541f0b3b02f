// Package cluster is the membership of the fleetpass servers (replicas)
// sharing one database: each replica has an id, writes a heartbeat every
// few seconds on the database's clock, and counts as dead once its
// heartbeat is older than the time-to-live. Other parts build on it: the
// engine's reaper resumes the work of dead replicas, host ownership picks
// among the live ones, and /v1/replicas shows them all.
//
// A replica trusts its own membership only until its last successful
// heartbeat's start plus the time-to-live minus a second (River's rule for
// its leader): past that, the others may already treat it as dead, so it
// fences itself (stops acting on machines) until a heartbeat succeeds again.
package cluster

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/store"
)

// Defaults of Config.
const (
	DefaultHeartbeat   = 2 * time.Second
	DefaultTTL         = 10 * time.Second
	DefaultForgetAfter = 24 * time.Hour
	DefaultJanitor     = time.Minute
)

// Config configures a replica's membership.
type Config struct {
	// ID is the replica's id; empty: a random one, new at every start.
	ID string
	// Address is where the replica serves (its public URL), and Version
	// the fleetpass version it runs: both shown in /v1/replicas.
	Address, Version string
	// Heartbeat is how often the replica renews its heartbeat, TTL how old
	// a heartbeat may be before the replica counts as dead, ForgetAfter
	// how long a dead replica stays listed.
	Heartbeat, TTL, ForgetAfter time.Duration
	// JanitorEvery is how often the replica holding the janitor's lease
	// deletes expired rows of shared tables; default a minute.
	JanitorEvery time.Duration
	// Exclusive says no other process can share the database (SQLite, whose
	// data directory is locked to one process): every other replica is
	// dead, whatever its last heartbeat.
	Exclusive bool
	// OnFence is called when the replica stops trusting its membership
	// (its heartbeat could not be renewed within the trust window), and
	// OnTrust when a heartbeat succeeds again. Both run on the heartbeat
	// loop's goroutine and must not block.
	OnFence func(reason error)
	OnTrust func()
	Log     *slog.Logger
}

// Member is one replica as the membership sees it.
type Member struct {
	ID, Address, Version string
	StartedAt            time.Time
	LastHeartbeat        time.Time
	// StoppedAt is set when the replica stopped gracefully.
	StoppedAt *time.Time
	// Alive: its heartbeat is fresh and it has not stopped.
	Alive bool
}

// Membership is this replica's view of the cluster.
type Membership struct {
	store *store.Store
	cfg   Config
	log   *slog.Logger

	mu sync.Mutex
	// trustedUntil is the end of the trust window of the last successful
	// heartbeat (local monotonic clock).
	trustedUntil time.Time
	fenced       bool
	owns         func(ctx context.Context, replicaID string) []string
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidID reports whether id can name a replica: 1-63 letters, digits,
// '.', '_' and '-', starting with a letter or digit.
func ValidID(id string) bool { return idRe.MatchString(id) }

// NewID is a random replica id.
func NewID() string {
	b := make([]byte, 6)
	_, _ = crand.Read(b)
	return "r-" + hex.EncodeToString(b)
}

// New makes the membership of a replica; Join makes it a member.
func New(s *store.Store, cfg Config) (*Membership, error) {
	if cfg.ID == "" {
		cfg.ID = NewID()
	}
	if !ValidID(cfg.ID) {
		return nil, fmt.Errorf("replica id %q: 1-63 letters, digits, '.', '_' and '-', starting with a letter or digit", cfg.ID)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 2*cfg.Heartbeat+time.Second {
		return nil, fmt.Errorf("the membership time-to-live (%s) must exceed two heartbeats (%s) and a second", cfg.TTL, cfg.Heartbeat)
	}
	if cfg.ForgetAfter <= 0 {
		cfg.ForgetAfter = DefaultForgetAfter
	}
	if cfg.JanitorEvery <= 0 {
		cfg.JanitorEvery = DefaultJanitor
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Membership{store: s, cfg: cfg, log: cfg.Log.With("replica", cfg.ID)}, nil
}

// ID is this replica's id.
func (m *Membership) ID() string { return m.cfg.ID }

// TTL is how old a heartbeat may be before its replica counts as dead.
func (m *Membership) TTL() time.Duration { return m.cfg.TTL }

// SetOwns sets what the listing reports a replica owns (host leases, by
// the package that keeps them).
func (m *Membership) SetOwns(f func(ctx context.Context, replicaID string) []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.owns = f
}

// Owns is what replica id owns, as SetOwns's function says (none without
// one).
func (m *Membership) Owns(ctx context.Context, id string) []string {
	m.mu.Lock()
	f := m.owns
	m.mu.Unlock()
	if f == nil {
		return []string{}
	}
	out := f(ctx, id)
	if out == nil {
		out = []string{}
	}
	return out
}

// Join writes the replica's first heartbeat. A server joins before it
// fetches any work, so no other replica can mistake its jobs for a dead
// one's.
func (m *Membership) Join(ctx context.Context) error {
	if err := m.beat(ctx); err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	m.log.Info("joined the cluster", "address", m.cfg.Address, "version", m.cfg.Version)
	return nil
}

func (m *Membership) beat(ctx context.Context) error {
	start := time.Now()
	bctx, cancel := context.WithTimeout(ctx, m.cfg.TTL-time.Second)
	defer cancel()
	_, err := m.store.Heartbeat(bctx, store.Replica{ID: m.cfg.ID, Address: m.cfg.Address, Version: m.cfg.Version})
	if err != nil {
		return err
	}
	m.mu.Lock()
	// The window counts from the attempt's start: the database wrote the
	// heartbeat no earlier than that, so the others see this replica alive
	// at least until then plus the time-to-live.
	if until := start.Add(m.cfg.TTL - time.Second); until.After(m.trustedUntil) {
		m.trustedUntil = until
	}
	m.mu.Unlock()
	return nil
}

// Trusted reports whether the replica may act: its last heartbeat is
// recent enough that no other replica treats it as dead.
func (m *Membership) Trusted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Now().Before(m.trustedUntil)
}

// Run renews the heartbeat until ctx ends, fencing the replica (OnFence)
// when the trust window lapses and lifting the fence (OnTrust) at the next
// success, and forgets long-dead replicas now and then.
func (m *Membership) Run(ctx context.Context) {
	beat := time.NewTimer(m.cfg.Heartbeat)
	defer beat.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	janitor := time.NewTicker(m.cfg.JanitorEvery)
	defer janitor.Stop()
	m.pruneOnce(ctx)
	for {
		m.mu.Lock()
		wait := time.Until(m.trustedUntil)
		m.mu.Unlock()
		fence := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			fence.Stop()
			return
		case <-prune.C:
			m.pruneOnce(ctx)
		case <-janitor.C:
			m.tidy(ctx)
		case <-fence.C:
			if !m.Trusted() {
				m.setFenced(true, errors.New("the heartbeat could not be renewed within the trust window"))
			}
		case <-beat.C:
			err := m.beat(ctx)
			if err != nil && ctx.Err() == nil {
				m.log.Warn("heartbeat failed", "err", err)
			}
			if err == nil {
				m.setFenced(false, nil)
			} else if !m.Trusted() {
				m.setFenced(true, err)
			}
			// A little jitter keeps replicas started together apart.
			beat.Reset(m.cfg.Heartbeat - m.cfg.Heartbeat/10 + rand.N(m.cfg.Heartbeat/5))
		}
		fence.Stop()
	}
}

func (m *Membership) setFenced(fenced bool, reason error) {
	m.mu.Lock()
	changed := m.fenced != fenced
	m.fenced = fenced
	m.mu.Unlock()
	if !changed {
		return
	}
	if fenced {
		m.log.Error("self-fenced: this replica stops acting on machines until its heartbeat is renewed", "err", reason)
		if m.cfg.OnFence != nil {
			m.cfg.OnFence(reason)
		}
		return
	}
	m.log.Info("heartbeat renewed: this replica acts again")
	if m.cfg.OnTrust != nil {
		m.cfg.OnTrust()
	}
}

func (m *Membership) pruneOnce(ctx context.Context) {
	n, err := m.store.PruneReplicas(ctx, m.cfg.ForgetAfter)
	if err != nil && ctx.Err() == nil {
		m.log.Warn("forget long-dead replicas", "err", err)
	}
	if n > 0 {
		m.log.Info("forgot long-dead replicas", "count", n)
	}
}

// JanitorLease names the lease of the replica that deletes what expired
// in shared tables (replay keys), so that replicas do not each delete the
// same rows and wait on each other's row locks.
const JanitorLease = "janitor"

// tidy deletes expired replay keys if this replica holds the janitor's
// lease (taking it when it is free).
func (m *Membership) tidy(ctx context.Context) {
	if !m.Trusted() {
		return
	}
	if _, ok, err := m.store.AcquireLease(ctx, JanitorLease, m.cfg.ID, 3*m.cfg.JanitorEvery); err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			m.log.Warn("janitor: take the lease", "err", err)
		}
		return
	}
	n, err := m.store.PruneReplayKeys(ctx)
	if err != nil && ctx.Err() == nil {
		m.log.Warn("janitor: delete expired replay keys", "err", err)
	}
	if n > 0 {
		m.log.Debug("janitor: deleted expired replay keys", "count", n)
	}
}

// Leave marks the replica stopped: the others take over its work at once.
func (m *Membership) Leave(ctx context.Context) error {
	if err := m.store.StopReplica(ctx, m.cfg.ID); err != nil {
		return err
	}
	m.log.Info("left the cluster")
	return nil
}

// Members lists every known replica, alive or dead, oldest first.
func (m *Membership) Members(ctx context.Context) ([]Member, error) {
	rows, now, err := m.store.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(rows))
	for _, r := range rows {
		alive := r.StoppedAt == nil && now.Sub(r.HeartbeatAt) <= m.cfg.TTL
		if m.cfg.Exclusive && r.ID != m.cfg.ID {
			alive = false
		}
		out = append(out, Member{ID: r.ID, Address: r.Address, Version: r.Version, StartedAt: r.StartedAt,
			LastHeartbeat: r.HeartbeatAt, StoppedAt: r.StoppedAt, Alive: alive})
	}
	return out, nil
}

// Alive lists the live replicas, oldest first.
func (m *Membership) Alive(ctx context.Context) ([]Member, error) {
	all, err := m.Members(ctx)
	if err != nil {
		return nil, err
	}
	live := all[:0]
	for _, r := range all {
		if r.Alive {
			live = append(live, r)
		}
	}
	return live, nil
}

// Liveness is every listed replica's id and whether it is alive.
func (m *Membership) Liveness(ctx context.Context) (map[string]bool, error) {
	all, err := m.Members(ctx)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(all))
	for _, r := range all {
		ids[r.ID] = r.Alive
	}
	return ids, nil
}

// Errors of Forget.
var (
	ErrUnknown = errors.New("no such replica")
	ErrAlive   = errors.New("the replica is alive")
)

// Forget drops a dead replica from the listing: ErrAlive for a live one
// (this one included), ErrUnknown for an id never seen or forgotten.
func (m *Membership) Forget(ctx context.Context, id string) error {
	if id == m.cfg.ID {
		return ErrAlive
	}
	ttl := m.cfg.TTL
	if m.cfg.Exclusive {
		ttl = -time.Hour // every other replica is dead
	}
	err := m.store.ForgetReplica(ctx, id, ttl)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ErrUnknown
	case errors.Is(err, store.ErrConflict):
		return ErrAlive
	}
	return err
}

package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivertype"

	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// listedMembers is a membership the test edits: every listed replica and
// whether it is alive; "me" is the engine's own.
type listedMembers struct {
	mu      sync.Mutex
	live    map[string]bool
	trusted bool
}

func (m *listedMembers) ID() string { return "me" }

func (m *listedMembers) Liveness(context.Context) (map[string]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.live), nil
}

func (m *listedMembers) Trusted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trusted
}

func (m *listedMembers) set(id string, alive bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live[id] = alive
}

// reaperEngine is an engine that is never started: nothing but the test's
// reaper passes touches its jobs.
func reaperEngine(t *testing.T, st *store.Store, members engine.Members, backstop time.Duration) *engine.Engine {
	t.Helper()
	t.Cleanup(func() { st.Close() })
	seal, err := sealer.New(bytes.Repeat([]byte{4}, sealer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := fast()
	cfg.Members, cfg.ReaperBackstop = members, backstop
	e, err := engine.New(context.Background(), st, engine.Drivers{}, seal, events.NewBus(st, log, time.Second),
		metrics.New(), log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runningJob records a job as running, last attempted by owner.
func runningJob(t *testing.T, e *engine.Engine, kind, owner string) int64 {
	t.Helper()
	at := time.Now().UTC().Add(-time.Minute)
	j, err := e.Executor().JobInsertFull(context.Background(), &riverdriver.JobInsertFullParams{
		Attempt: 1, AttemptedAt: &at, AttemptedBy: []string{"someone-before", owner}, EncodedArgs: []byte(`{}`),
		Kind: kind, MaxAttempts: 25, Metadata: []byte(`{}`), Priority: 1,
		// A queue no engine works: a resumed job stays available.
		Queue: "reaper-test", State: rivertype.JobStateRunning,
	})
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

func jobState(t *testing.T, e *engine.Engine, id int64) rivertype.JobState {
	t.Helper()
	j, err := e.Executor().JobGetByID(context.Background(), &riverdriver.JobGetByIDParams{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return j.State
}

// A dead replica's running items are resumed however many pages of
// running jobs they span, a full last page included; a live replica's,
// and jobs that are not items, are left alone.
func TestTheReaperResumesADeadReplicasItemsOnEveryPage(t *testing.T) {
	item := engine.ItemArgs{}.Kind()
	for _, dead := range []int{2, 6, 7} {
		t.Run(fmt.Sprint(dead, "_dead_jobs"), func(t *testing.T) {
			bothStores(t, func(t *testing.T, st *store.Store) {
				m := &listedMembers{live: map[string]bool{"me": true, "live": true, "gone": false}, trusted: true}
				e := reaperEngine(t, st, m, time.Hour)
				var deadIDs, keptIDs []int64
				for i := range dead {
					deadIDs = append(deadIDs, runningJob(t, e, item, "gone"))
					if i%2 == 0 {
						keptIDs = append(keptIDs, runningJob(t, e, item, "live"), runningJob(t, e, item, "me"))
					}
					if i%3 == 0 {
						keptIDs = append(keptIDs, runningJob(t, e, "not_an_item", "gone"))
					}
				}
				// One never listed at all: unknown is dead too.
				deadIDs = append(deadIDs, runningJob(t, e, item, "never-listed"))
				read, err := e.ReapPass(context.Background(), new(engine.Reaper), 3)
				if err != nil || !read {
					t.Fatalf("first pass: read %v, %v", read, err)
				}
				for _, id := range deadIDs {
					if s := jobState(t, e, id); s != rivertype.JobStateAvailable {
						t.Errorf("dead replica's job %d is %s, want available", id, s)
					}
				}
				for _, id := range keptIDs {
					if s := jobState(t, e, id); s != rivertype.JobStateRunning {
						t.Errorf("job %d is %s, want left running", id, s)
					}
				}
			})
		})
	}
}

// Between deaths a pass reads the membership alone: the running jobs are
// read on the first pass, when a replica dies (even one that joined and
// died between two passes), after a pass the replica could not trust,
// and at the backstop.
func TestTheReaperReadsTheRunningJobsOnlyWhenAReplicaDied(t *testing.T) {
	bothStores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		m := &listedMembers{live: map[string]bool{"me": true, "b": true, "c": true}, trusted: true}
		e := reaperEngine(t, st, m, time.Hour)
		r := new(engine.Reaper)
		pass := func(step string, wantRead bool) {
			t.Helper()
			read, err := e.ReapPass(ctx, r, 3)
			if err != nil || read != wantRead {
				t.Fatalf("%s: read %v (%v), want %v", step, read, err, wantRead)
			}
		}
		pass("the first pass", true)
		pass("nobody died", false)
		cJob := runningJob(t, e, engine.ItemArgs{}.Kind(), "c")
		m.set("d", true)
		pass("d joined", false)
		if s := jobState(t, e, cJob); s != rivertype.JobStateRunning {
			t.Fatalf("c's job is %s while c lives", s)
		}
		m.set("c", false)
		pass("c died", true)
		if s := jobState(t, e, cJob); s != rivertype.JobStateAvailable {
			t.Errorf("c's job is %s after c died, want available", s)
		}
		pass("c stays dead", false)
		m.set("d", false)
		pass("d, which joined since the last read, died", true)
		m.set("e", false)
		pass("e joined and died between two passes", true)
		m.mu.Lock()
		m.trusted = false
		m.mu.Unlock()
		pass("untrusted", false)
		m.mu.Lock()
		m.trusted = true
		m.mu.Unlock()
		pass("trusted again", true)
		pass("trusted, nobody died", false)
	})
	t.Run("backstop", func(t *testing.T) {
		st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "fleetpass.db"))
		if err != nil {
			t.Fatal(err)
		}
		m := &listedMembers{live: map[string]bool{"me": true}, trusted: true}
		e := reaperEngine(t, st, m, time.Nanosecond)
		r := new(engine.Reaper)
		for i := range 3 {
			if read, err := e.ReapPass(context.Background(), r, 3); err != nil || !read {
				t.Fatalf("pass %d past the backstop: read %v, %v", i, read, err)
			}
		}
	})
}

package storetest

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	"github.com/fleetpass/fleetpass/internal/store"
)

// testAgentPollAfterGoneIsAChange: a poll tells whether it changed the
// agent (new session or readiness, or back after being marked gone), and
// marking the agent gone applies only to its latest poll. Raced: when a
// replica marks the agent gone at the moment its next poll reaches another
// replica, either the mark is refused (a newer poll exists) or the poll
// counts as a change (so it marks the guest alive again). Never both a
// mark and an unchanged poll: that left a connected agent's guest "not
// alive" for good.
func testAgentPollAfterGoneIsAChange(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ins := instances(t, s, "acme", 1)
	mustTx(t, s, func(tx *sql.Tx) error {
		return s.CreateAgent(ctx, tx, store.Agent{ID: "agt-poll", InstanceID: ins[0], Tenant: "acme", PublicKey: []byte{1},
			SecretHash: []byte{2}, Hostname: "h", OSType: "linux", Version: "1"})
	})
	poll := func(session string, ready bool) (int64, bool) {
		t.Helper()
		seq, changed, err := s.AgentPolled(ctx, s.DB, "agt-poll", session, ready, "1")
		if err != nil {
			t.Fatal(err)
		}
		return seq, changed
	}
	gone := func(seq int64) bool {
		t.Helper()
		g, err := s.AgentGone(ctx, s.DB, "agt-poll", seq)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	s1, c := poll("one", false)
	if !c {
		t.Error("the first poll is no change")
	}
	if _, c := poll("one", true); !c {
		t.Error("becoming ready is no change")
	}
	s3, c := poll("one", true)
	if c {
		t.Error("the same session, ready again, is a change")
	}
	if gone(s1) {
		t.Error("a superseded poll marked the agent gone")
	}
	if !gone(s3) {
		t.Fatal("the latest poll could not mark the agent gone")
	}
	if _, c := poll("one", true); !c {
		t.Error("coming back after being marked gone is no change")
	}
	if _, c := poll("two", true); !c {
		t.Error("a new session is no change")
	}

	for range 30 {
		old, _ := poll("two", true)
		var wg sync.WaitGroup
		var marked, changed bool
		wg.Add(2)
		go func() { defer wg.Done(); marked = gone(old) }()
		go func() { defer wg.Done(); _, changed = poll("two", true) }()
		wg.Wait()
		if marked && !changed {
			t.Fatal("the agent was marked gone and its concurrent poll counted as no change")
		}
		a, err := s.GetAgent(ctx, s.DB, "agt-poll")
		if err != nil {
			t.Fatal(err)
		}
		if !a.Connected {
			t.Fatalf("the agent is disconnected after its last poll (marked gone: %v)", marked)
		}
	}
}

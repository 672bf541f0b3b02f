package realguest

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agenttest"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// TestMain stops the throwaway PostgreSQL cluster that the replica tests
// start.
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// replica is one `fleetpass serve` process on the test's database, with a
// log of its own, so that a test can tell which replica did what.
type replica struct {
	id, url, dir, logPath string
	p                     *servertest.Proc
	c                     *client.Client
}

func (r *replica) logs(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// launchReplicas starts `fleetpass serve` replicas at once on the database
// at dbURL with the sealing key in keyFile, logging at debug level (the
// most they log, so that a scan for a secret can find one), and waits
// until each is ready.
func launchReplicas(t testing.TB, bin, dbURL, keyFile string, ids ...string) []*replica {
	t.Helper()
	key := servertest.Key{ID: adminKeyID, Secret: adminSecret}
	rs := make([]*replica, len(ids))
	for i, id := range ids {
		r := &replica{id: id, dir: t.TempDir(), logPath: filepath.Join(t.TempDir(), id+".log")}
		r.p = servertest.LaunchProc(t, bin, key, r.dir, testutil.FreePort(t), r.logPath, "--database-url", dbURL,
			"--secret-key-file", keyFile, "--replica-id", id, "--log-level", "debug")
		r.url = "http://" + r.p.Addr
		c, err := client.New(r.url, adminKeyID, adminSecret)
		if err != nil {
			t.Fatal(err)
		}
		r.c = c
		rs[i] = r
	}
	for _, r := range rs {
		r.p.WaitReady()
	}
	return rs
}

// executor is the replica that ran the operation's item of the instance:
// the last attempt of its River job.
func executor(t testing.TB, db *sql.DB, opID, instance string) string {
	t.Helper()
	var id string
	if err := db.QueryRow(`SELECT attempted_by[array_length(attempted_by, 1)] FROM river_job
		WHERE kind = 'fleetpass_item' AND args->>'op' = $1 AND args->>'ins' = $2`, opID, instance).Scan(&id); err != nil {
		t.Fatalf("the replica that ran %s's item of %s: %v", opID, instance, err)
	}
	return id
}

// acks counts the replica log's acknowledgements of the agent's commands:
// the replica the agent's ack reached.
func acks(log, agentID string) int {
	n := 0
	for line := range strings.Lines(log) {
		if strings.Contains(line, "agent command acknowledged") && strings.Contains(line, "agent_id="+agentID) {
			n++
		}
	}
	return n
}

// Issue 13's agent test on real processes: two `fleetpass serve` replicas
// on one PostgreSQL database behind a load balancer, and two guests running
// the real agent, enrolled through the balancer. With the agents polling
// A, online resets accepted by B end within 2 seconds of the POST, until B
// has run an item of each agent (a command stored by B, which only a
// database notification brings to the poll held on A in time). Then the
// balancer turns to B and A is killed with SIGKILL: the agents reconnect
// to B on their own, and the next reset, accepted by B, works. Every
// reset is proven by SSH logins, and no password is in a server's log, an
// agent's log, a data directory, PostgreSQL's files or any process's
// arguments.
func TestRealAgentsFollowAReplicaKilledWithSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two server processes on PostgreSQL and real guests")
	}
	guesttest.EnsureTools(t)
	pg := pgtest.Shared(t)
	srvBin, agentBin := buildServer(t), agenttest.Build(t)
	dbURL := pg.Database(t)
	rs := launchReplicas(t, srvBin, dbURL, servertest.WriteSealingKey(t, 31), "pa", "pb")
	a, b := rs[0], rs[1]
	lb, front := servertest.NewBalancer(t, a.url)
	c, err := client.New(front, adminKeyID, adminSecret)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.CreateTenant(ctx, apiv1.TenantCreate{Name: tenant}); err != nil {
		t.Fatal(err)
	}

	// A new password for each round before the kill, and one after it.
	old, after := newPassword(), newPassword()
	before := make([]string, 12)
	for i := range before {
		before[i] = newPassword()
	}
	var ms []*machine
	var ids []string
	for _, name := range []string{"lb-a", "lb-b"} {
		g := guesttest.Start(t, guesttest.Options{Users: []guesttest.UserSpec{{Name: user, Password: old}}})
		instance, agent := agenttest.Enrol(t, c, g, agentBin, front, tenant, name)
		m := &machine{name: name, g: g, instance: instance, agentID: agent, agentBin: agentBin}
		if err := m.startAgent(); err != nil {
			t.Fatal(err)
		}
		ms, ids = append(ms, m), append(ids, instance)
	}
	// Alive as B reads it: liveness is a row, whichever replica the agent
	// polls.
	for _, m := range ms {
		agenttest.WaitInstance(t, b.c, m.instance, time.Minute, "running with a live guest", agenttest.RunningAlive, m.agentLogs)
		if lb.Polls(a.url, m.agentID) == 0 {
			t.Fatalf("%s: alive, but no poll of its agent went to A", m.name)
		}
	}

	argv := testutil.WatchArgv(t, append([]string{after}, before...)...)
	argv.Expect(filepath.Base(srvBin), "fleetpass-agent")
	// reset posts an online reset of both guests to r's own URL, not the
	// balancer's, and returns how long after the POST's answer the
	// operation's end reached a waiting client.
	reset := func(what string, r *replica, pw string) (string, time.Duration) {
		t.Helper()
		op, err := r.c.ResetPassword(ctx, apiv1.PasswordReset{InstanceIDs: ids, User: user, Mode: apiv1.ModeOnline, Password: pw})
		if err != nil {
			t.Fatalf("%s: reset: %v", what, err)
		}
		posted := time.Now()
		final := agenttest.WaitOperation(t, r.c, op.ID, 2*time.Minute)
		took := time.Since(posted)
		server := "?"
		if final.FinishedAt != nil {
			server = final.FinishedAt.Sub(final.CreatedAt).String()
		}
		t.Logf("%s: the operation ended %v after the POST's answer (%v from its creation to its end on the server)",
			what, took.Round(time.Millisecond), server)
		if final.Status != apiv1.OperationSucceeded {
			t.Errorf("%s: operation %s, want %s", what, final.Status, apiv1.OperationSucceeded)
		}
		for _, m := range ms {
			wantItem(t, final, m, apiv1.ItemSucceeded, "")
		}
		return op.ID, took
	}

	// The agents' polls are held on A; B accepts each reset, and either
	// replica may run its items. Rounds go on until every agent has had a
	// command stored by B (its item run on B), which only a notification
	// through the database can bring to its poll on A in time; each round
	// must end within the 2 seconds wherever its items ran.
	db := pg.DBURL(t, dbURL)
	ranOnB := map[string]int{}
	var last string
	rounds := 0
	for ; rounds < len(before) && len(ranOnB) < len(ms); rounds++ {
		pw := before[rounds]
		opID, took := reset(fmt.Sprintf("round %d: reset accepted by B, agents on A", rounds+1), b, pw)
		if took > 2*time.Second {
			t.Errorf("round %d: the reset accepted by B ended %v after the POST, want within 2s with the agents on A", rounds+1, took)
		}
		for _, m := range ms {
			if executor(t, db, opID, m.instance) == b.id {
				ranOnB[m.instance]++
			}
		}
		last = pw
	}
	if len(ranOnB) < len(ms) {
		t.Fatalf("in %d rounds, B ran the items of only %d of the %d agents: the path from B to a poll held on A went untested",
			rounds, len(ranOnB), len(ms))
	}
	t.Logf("%d rounds until B had run an item of every agent (%v)", rounds, ranOnB)
	// The SSH proof is for the last round only: sshd takes seconds to
	// refuse a password, and each round's items already said succeeded.
	for _, m := range ms {
		wantLogins(t, m, last, old)
		if acks(a.logs(t), m.agentID) == 0 {
			t.Errorf("%s: A's log shows no acknowledgement of its agent: did it poll A?", m.name)
		}
	}

	// The balancer drops A before A dies, as a health check would; the
	// polls held on A end with the kill.
	lb.Point(b.url)
	a.p.Kill()
	testutil.WaitFor(t, time.Minute, "both agents polling B, alive", func() bool {
		for _, m := range ms {
			in, err := b.c.GetInstance(ctx, m.instance)
			if err != nil || !agenttest.RunningAlive(in) || lb.Polls(b.url, m.agentID) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("both agents polled B %v after A's SIGKILL", time.Since(a.p.KilledAt).Round(time.Millisecond))

	reset("reset accepted by B after A's SIGKILL", b, after)
	argv.Check(t)
	for _, m := range ms {
		wantLogins(t, m, after, last)
		if acks(b.logs(t), m.agentID) == 0 {
			t.Errorf("%s: B's log shows no acknowledgement of its agent after A's death", m.name)
		}
	}

	places := map[string]string{"A's log": a.logs(t), "B's log": b.logs(t)}
	for _, m := range ms {
		places[m.name+" agent log"] = m.agentLogs()
		places[m.name+" sshd log"] = m.g.SSHDLog()
	}
	secrets := append([]string{old, after}, before[:rounds]...)
	testutil.AssertNoSecretIn(t, places, secrets...)
	for _, pw := range secrets {
		for _, r := range rs {
			testutil.AssertNotInDir(t, r.dir, pw)
		}
		servertest.AssertNotInPostgres(t, pw)
	}
}

package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

var replicaAdmin = servertest.Key{ID: "fpk-replicas", Secret: "replicas-test-admin-secret-0123"}

// startReplica starts a server on the PostgreSQL database dbURL, as one
// replica among others sharing it.
func startReplica(t *testing.T, dbURL, keyFile, id string, more ...func(*server.Config)) *servertest.Server {
	t.Helper()
	return servertest.Start(t, servertest.WithAdminKey(replicaAdmin), servertest.WithConfig(func(c *server.Config) {
		c.DatabaseURL, c.SecretKeyFile, c.ReplicaID = dbURL, keyFile, id
		c.PublicURL = "https://" + id + ".example:8443"
		for _, f := range more {
			f(c)
		}
	}))
}

func listReplicas(t *testing.T, s *servertest.Server) map[string]apiv1.Replica {
	t.Helper()
	var l apiv1.ReplicaList
	s.MustDo(replicaAdmin, "GET", "/v1/replicas", nil, 200, &l)
	out := map[string]apiv1.Replica{}
	for _, r := range l.Replicas {
		out[r.ID] = r
	}
	return out
}

// TestReplicasListEveryServerOfTheDatabase: each server of one database
// lists all of them, itself marked; a stopped one stays listed as not
// alive until an admin forgets it; only admins (keys or console users) see
// or forget replicas, and a live replica cannot be forgotten.
func TestReplicasListEveryServerOfTheDatabase(t *testing.T) {
	pgtest.Shared(t)
	dbURL, keyFile := storetest.PostgresURL(t), servertest.WriteSealingKey(t, 9)
	a := startReplica(t, dbURL, keyFile, "alpha")
	b := startReplica(t, dbURL, keyFile, "beta")

	got := listReplicas(t, a)
	if len(got) != 2 {
		t.Fatalf("replicas %+v, want alpha and beta", got)
	}
	for id, r := range got {
		if !r.Alive || r.Self != (id == "alpha") || r.Address != "https://"+id+".example:8443" || r.Version == "" ||
			r.LastHeartbeat.IsZero() || r.StartedAt.After(r.LastHeartbeat) || r.StoppedAt != nil || r.Owns == nil {
			t.Errorf("replica %s as alpha sees it: %+v", id, r)
		}
	}
	if r := listReplicas(t, b)["beta"]; !r.Self {
		t.Errorf("beta does not see itself: %+v", r)
	}

	tenantKey := a.NewKey("acme")
	for _, c := range []struct {
		method, path string
	}{{"GET", "/v1/replicas"}, {"DELETE", "/v1/replicas/beta"}} {
		if r := a.Do(tenantKey, c.method, c.path, nil); r.Status != 403 || r.ErrCode() != "FORBIDDEN" {
			t.Errorf("tenant key %s %s: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	// A console user who is not an admin is refused both through a
	// session; an admin one reaches them (so the refusal is the rule's).
	e := &env{t: t, s: a, srv: a.Server, url: a.URL}
	e.consoleUser("ivy", "acme", false)
	e.consoleUser("root-ivy", core.AdminTenant, true)
	for _, u := range []struct {
		name       string
		list, drop int
		code       string
	}{{"ivy", 403, 403, "FORBIDDEN"}, {"root-ivy", 200, 409, "REPLICA_ALIVE"}} {
		c := signInClient(t, e, u.name, consolePassword, "")
		for _, r := range []struct {
			method, path string
			want         int
			code         string
		}{{"GET", "/console/api/v1/replicas", u.list, "FORBIDDEN"}, {"DELETE", "/console/api/v1/replicas/beta", u.drop, u.code}} {
			req, _ := http.NewRequest(r.method, a.URL+r.path, nil)
			req.Header.Set("Origin", a.URL)
			req.Header.Set("X-CSRF-Token", c.csrf)
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var eb apiv1.ErrorBody
			_ = json.Unmarshal(body, &eb)
			if resp.StatusCode != r.want || (r.want >= 400 && eb.Error.Code != r.code) {
				t.Errorf("console user %s %s %s: %d %s, want %d %s", u.name, r.method, r.path, resp.StatusCode, body, r.want, r.code)
			}
		}
	}
	for _, id := range []string{"beta", "alpha"} {
		if r := a.Do(replicaAdmin, "DELETE", "/v1/replicas/"+id, nil); r.Status != 409 || r.ErrCode() != "REPLICA_ALIVE" {
			t.Errorf("forget live %s: %d %s", id, r.Status, r.Body)
		}
	}

	b.Stop()
	r, ok := listReplicas(t, a)["beta"]
	if !ok || r.Alive || r.StoppedAt == nil {
		t.Fatalf("stopped beta: %+v (listed %v)", r, ok)
	}
	a.MustDo(replicaAdmin, "DELETE", "/v1/replicas/beta", nil, 204, nil)
	if _, ok := listReplicas(t, a)["beta"]; ok {
		t.Fatal("beta is still listed after it was forgotten")
	}
	for _, id := range []string{"beta", "never-seen"} {
		if r := a.Do(replicaAdmin, "DELETE", "/v1/replicas/"+id, nil); r.Status != 404 || r.ErrCode() != "REPLICA_NOT_FOUND" {
			t.Errorf("forget %s: %d %s", id, r.Status, r.Body)
		}
	}
}

// TestAReplicaCutOffFromTheDatabaseFencesItselfAndComesBack: while its
// database refuses it, a replica's heartbeat lapses and it reports itself
// not ready (self-fenced) and stops its engine; once the database takes it
// back it is ready again.
func TestAReplicaCutOffFromTheDatabaseFencesItselfAndComesBack(t *testing.T) {
	c := pgtest.Shared(t)
	dbURL := storetest.PostgresURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	s := startReplica(t, dbURL, servertest.WriteSealingKey(t, 9), "gamma", func(c *server.Config) {
		c.ReplicaHeartbeat, c.ReplicaTTL = 100*time.Millisecond, 1500*time.Millisecond
	})
	ready := func() (int, string) {
		r := s.Do(servertest.Key{}, "GET", "/readyz", nil)
		return r.Status, string(r.Body)
	}
	if code, body := ready(); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	ctx := context.Background()
	cut := func(allow bool) {
		t.Helper()
		q := `ALTER DATABASE "` + dbName + `" ALLOW_CONNECTIONS ` + map[bool]string{true: "true", false: "false"}[allow]
		if err := c.Exec(ctx, "postgres", q); err != nil {
			t.Fatal(err)
		}
		if !allow {
			if err := c.Exec(ctx, "postgres", `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, dbName); err != nil {
				t.Fatal(err)
			}
		}
	}
	cut(false)
	t.Cleanup(func() { cut(true) })
	testutil.WaitFor(t, time.Minute, "readyz to say self-fenced", func() bool {
		code, body := ready()
		return code == 503 && strings.Contains(body, "self-fenced")
	})
	testutil.WaitFor(t, 10*time.Second, "the engine to be fenced", func() bool {
		return strings.Contains(s.Logs.String(), "engine fenced")
	})
	cut(true)
	testutil.WaitFor(t, time.Minute, "readyz to recover", func() bool {
		code, _ := ready()
		return code == 200
	})
	testutil.WaitFor(t, 10*time.Second, "the engine to be unfenced", func() bool {
		return strings.Contains(s.Logs.String(), "engine unfenced")
	})
}

// TestAStartingReplicaLeavesALiveReplicasWorkAlone: a replica that
// starts while another runs an item does not take the item over (only a
// dead replica's jobs are resumed), however many of its reaper's passes go
// by: three passes that each saw the live replica's job and left it.
func TestAStartingReplicaLeavesALiveReplicasWorkAlone(t *testing.T) {
	pgtest.Shared(t)
	dbURL, keyFile := storetest.PostgresURL(t), servertest.WriteSealingKey(t, 9)
	slow := servertest.FastEngine()
	slow.ShutdownTimeout = time.Minute
	// Every pass reads the running jobs, as it does when a replica died.
	slow.ReaperBackstop = time.Nanosecond
	a := startReplica(t, dbURL, keyFile, "alpha", func(c *server.Config) { c.Engine = slow })
	in := a.AddMachine(servertest.Machine{Name: "hangs", Running: true, Faults: sim.Faults{HangShutdown: true}})
	op := a.Reset(replicaAdmin, apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline,
		ForceStop: true, Password: "Live-Replica-pw-12"})
	db := pgtest.Shared(t).DBURL(t, dbURL)
	owner := func() (string, int64) {
		var by string
		var seq int64
		err := db.QueryRow(`SELECT j.attempted_by[array_length(j.attempted_by, 1)], i.exec_seq FROM river_job j
			JOIN items i ON i.operation_id = j.args->>'op' WHERE j.state = 'running' AND i.operation_id = $1`, op.ID).Scan(&by, &seq)
		if err != nil {
			return "", 0
		}
		return by, seq
	}
	testutil.WaitFor(t, time.Minute, "alpha to run the item", func() bool { by, seq := owner(); return by == "alpha" && seq > 0 })
	_, seq := owner()
	b := startReplica(t, dbURL, keyFile, "beta", func(c *server.Config) { c.Engine = slow })
	// Three of beta's reaper passes (every 2-3 s) that saw alpha's running
	// job, well within alpha's execution budget (a minute).
	testutil.WaitFor(t, time.Minute, "three reaper passes of beta's to see alpha's job", func() bool {
		n := 0
		for _, l := range strings.Split(b.Logs.String(), "\n") {
			if strings.Contains(l, `msg="reaper pass"`) && strings.Contains(l, "live_replicas_jobs=1 ") {
				n++
			}
		}
		return n >= 3
	})
	if by, now := owner(); by != "alpha" || now != seq {
		t.Fatalf("the item's job is %q's at execution %d, was alpha's at %d", by, now, seq)
	}
	if b.Logs.Contains("resumed work left by a dead replica") {
		t.Fatal("beta resumed a live replica's work")
	}
}

package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/demo"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// replicaProcs is three `fleetpass serve` processes on one PostgreSQL
// database, each with its data directory, sharing the sealing key.
type replicaProcs struct {
	t       *testing.T
	bin     string
	db      *sql.DB
	dbURL   string
	keyFile string
	logPath string
	ids     []string
	procs   map[string]*servertest.Proc
	dirs    map[string]string
}

var procAdmin = servertest.Key{ID: "fpk-replica-procs", Secret: "replica-procs-admin-secret-0123"}

// launch starts the replicas at once on the (empty) database and waits
// until each is ready.
func (r *replicaProcs) launch(args ...string) {
	r.t.Helper()
	for _, id := range r.ids {
		r.dirs[id] = r.t.TempDir()
		r.procs[id] = servertest.LaunchProc(r.t, r.bin, procAdmin, r.dirs[id], testutil.FreePort(r.t), r.logPath,
			append([]string{"--database-url", r.dbURL, "--secret-key-file", r.keyFile, "--replica-id", id}, args...)...)
	}
	for _, id := range r.ids {
		r.procs[id].WaitReady()
	}
}

// busiest is the live replica running the most items now (River's
// attempted_by of the running jobs), and how many it runs.
func (r *replicaProcs) busiest(dead map[string]bool) (string, int) {
	r.t.Helper()
	rows, err := r.db.Query(`SELECT attempted_by[array_length(attempted_by, 1)], count(*) FROM river_job
		WHERE state = 'running' GROUP BY 1 ORDER BY 2 DESC`)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			r.t.Fatal(err)
		}
		if !dead[id] {
			return id, n
		}
	}
	return "", 0
}

// stepCount counts the operation's items at step.
func (r *replicaProcs) stepCount(opID, step string) int {
	var n int
	if err := r.db.QueryRow(`SELECT count(*) FROM items WHERE operation_id = $1 AND step = $2`, opID, step).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// orphans counts the running jobs whose last attempt is replica id's.
func (r *replicaProcs) orphans(id string) int {
	var n int
	if err := r.db.QueryRow(`SELECT count(*) FROM river_job WHERE state = 'running'
		AND attempted_by[array_length(attempted_by, 1)] = $1`, id).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// killBusiest waits until items are at step and some live replica runs
// items, then kills the one running the most, and measures how long its
// jobs take to be resumed by the others.
func (r *replicaProcs) killBusiest(opID, step string, dead map[string]bool) (string, time.Duration) {
	r.t.Helper()
	var victim string
	var running int
	testutil.WaitFor(r.t, time.Minute, "items at step "+step+" on a live replica", func() bool {
		if r.stepCount(opID, step) == 0 {
			return false
		}
		victim, running = r.busiest(dead)
		return victim != ""
	})
	p := r.procs[victim]
	p.Kill()
	dead[victim] = true
	r.t.Logf("killed %s (running %d items) with %d items at %s", victim, running, r.stepCount(opID, step), step)
	testutil.WaitFor(r.t, time.Minute, "the dead replica's jobs to be resumed", func() bool { return r.orphans(victim) == 0 })
	return victim, time.Since(p.KilledAt)
}

// TestReplicasKilledMidBatchLoseNothing is issue 13's main test: three
// replicas started at once on an empty database (one admin key, one
// migration), a fourth with another sealing key refused, then a batch of
// 100 offline resets accepted by one replica while the busiest replica is
// killed with SIGKILL as machines shut down, and another as they boot: the
// last replica finishes every item exactly once within 60 s, no machine
// is ever acted on by two replicas at once, every machine runs with the
// new password, no job is discarded, and the password is in no log and
// nowhere in PostgreSQL's files.
func TestReplicasKilledMidBatchLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three server processes on PostgreSQL")
	}
	if storetest.OnPostgres() {
		t.Skip("runs on PostgreSQL in every run: once is enough")
	}
	c := pgtest.Shared(t)
	r := &replicaProcs{t: t, bin: testutil.BuildBinary(t, "github.com/fleetpass/fleetpass/cmd/fleetpass"),
		dbURL: c.Database(t), keyFile: servertest.WriteSealingKey(t, 21), logPath: filepath.Join(t.TempDir(), "replicas.log"),
		ids: []string{"ra", "rb", "rc"}, procs: map[string]*servertest.Proc{}, dirs: map[string]string{}}
	r.db = c.DBURL(t, r.dbURL)
	r.launch("--sim-instances", "100", "--sim-boot-time", "1500ms", "--sim-shutdown-time", "1500ms",
		"--sim-action-time", "20ms")

	// Started together on an empty database: one admin key (the given
	// one: all three agree), each migration once, one fleet.
	var keys, dupVersions, machines int
	for q, v := range map[string]*int{
		`SELECT count(*) FROM api_keys`: &keys,
		`SELECT count(*) FROM (SELECT version_id FROM goose_db_version GROUP BY version_id HAVING count(*) > 1) d`: &dupVersions,
		`SELECT count(*) FROM sim_machines`: &machines,
	} {
		if err := r.db.QueryRow(q).Scan(v); err != nil {
			t.Fatal(err)
		}
	}
	if keys != 1 || dupVersions != 0 || machines != 100 {
		t.Fatalf("after a joint start: %d keys, %d versions applied twice, %d machines; want 1, 0, 100", keys, dupVersions, machines)
	}
	var l apiv1.ReplicaList
	r.procs["ra"].API("GET", "/v1/replicas", nil, &l)
	if len(l.Replicas) != 3 {
		t.Fatalf("replicas %+v", l.Replicas)
	}

	// A replica with another sealing key refuses to start.
	other := servertest.LaunchProc(t, r.bin, procAdmin, t.TempDir(), testutil.FreePort(t), filepath.Join(t.TempDir(), "other.log"),
		"--database-url", r.dbURL, "--secret-key-file", servertest.WriteSealingKey(t, 22), "--replica-id", "rx")
	if other.Wait(time.Minute) != nil || other.ExitErr() == nil {
		t.Fatal("a replica with another sealing key started")
	}

	const password = "Replicas-Resume-pw-91"
	list, op := resetLoadFleet(t, r.procs["ra"], password)

	dead := map[string]bool{}
	first, d1 := r.killBusiest(op.ID, apiv1.StepShuttingDown, dead)
	second, d2 := r.killBusiest(op.ID, apiv1.StepStarting, dead)
	lastKill := r.procs[second].KilledAt
	t.Logf("killed %s (resumed after %v) and %s (resumed after %v)", first, d1, second, d2)
	var survivor *servertest.Proc
	for _, id := range r.ids {
		if !dead[id] {
			survivor = r.procs[id]
		}
	}

	for op.Status == apiv1.OperationRunning || op.Status == "" {
		if time.Since(lastKill) > 60*time.Second {
			t.Fatalf("the batch did not finish within 60 s of the last kill: %+v", op.Summary)
		}
		survivor.API("GET", "/v1/operations/"+op.ID+"/wait?timeout=5s", nil, &op)
	}
	t.Logf("the batch ended %v after the last kill", time.Since(lastKill).Round(100*time.Millisecond))
	if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 100 || op.Summary.Total != 100 {
		t.Fatalf("operation %s %+v", op.Status, op.Summary)
	}

	// Exactly one end per item in the event log.
	ends := map[string]int{}
	rows, err := r.db.Query(`SELECT data FROM events WHERE type = $1 AND ref = $2`, events.TypeItem, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var data []byte
		var ev apiv1.ItemEvent
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Item.State == apiv1.ItemSucceeded || ev.Item.State == apiv1.ItemFailed {
			ends[ev.Item.InstanceID]++
		}
	}
	rows.Close()
	for _, in := range list.Instances {
		if ends[in.ID] != 1 {
			t.Errorf("instance %s: %d item ends in the event log, want 1", in.Name, ends[in.ID])
		}
	}

	var discarded int
	if err := r.db.QueryRow(`SELECT count(*) FROM river_job WHERE state = 'discarded'`).Scan(&discarded); err != nil || discarded != 0 {
		t.Errorf("%d River jobs discarded (%v)", discarded, err)
	}
	fleet, err := sim.OpenDB(context.Background(), r.db, store.Postgres, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := fleet.Overlaps(context.Background()); err != nil || n != 0 {
		t.Errorf("%d actions overlapped another on the same machine (%v)", n, err)
	}
	snaps, err := fleet.List(context.Background())
	if err != nil || len(snaps) != 100 {
		t.Fatalf("%d machines (%v)", len(snaps), err)
	}
	for _, s := range snaps {
		ok, _ := fleet.CheckPassword(context.Background(), s.ID, "root", []byte(password))
		if s.Power != driver.PowerRunning || !ok {
			t.Errorf("machine %s: power %s, password set %v", s.ID, s.Power, ok)
		}
	}
	if err := survivor.Terminate(20 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	logs, _ := os.ReadFile(r.logPath)
	for _, want := range []string{"resumed work left by a dead replica"} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("the logs lack %q", want)
		}
	}
	if strings.Contains(string(logs), password) {
		t.Error("the password is in a server's log")
	}
	for _, dir := range r.dirs {
		testutil.AssertNotInDir(t, dir, password)
	}
	servertest.AssertNotInPostgres(t, password)
}

// BenchmarkFailover kills the replica running the most items of a batch,
// again and again (a new replica started after each kill), and reports
// the time from each SIGKILL until the others have resumed every item it
// was running: p50 and p99 over b.N kills (run with -benchtime=10x).
func BenchmarkFailover(b *testing.B) {
	c := pgtest.Shared(b)
	bin := testutil.BuildBinary(b, "github.com/fleetpass/fleetpass/cmd/fleetpass")
	dbURL, keyFile := c.Database(b), servertest.WriteSealingKey(b, 23)
	db := c.DBURL(b, dbURL)
	logPath := filepath.Join(b.TempDir(), "replicas.log")
	var mu sync.Mutex
	procs := map[string]*servertest.Proc{}
	start := func(id string) {
		p := servertest.StartProc(b, bin, procAdmin, b.TempDir(), testutil.FreePort(b), logPath, "--database-url", dbURL,
			"--secret-key-file", keyFile, "--replica-id", id, "--sim-instances", "100",
			"--sim-boot-time", "5s", "--sim-shutdown-time", "5s")
		mu.Lock()
		procs[id] = p
		mu.Unlock()
	}
	for _, id := range []string{"f0", "f1", "f2"} {
		start(id)
	}
	var times []time.Duration
	b.ResetTimer()
	for i := range b.N {
		var entry *servertest.Proc
		for _, p := range procs {
			entry = p
			break
		}
		var list apiv1.InstanceList
		entry.API("GET", "/v1/instances?tenant=load&limit=1000", nil, &list)
		var op apiv1.Operation
		// Slow machines: the items are still running when the kill lands.
		if code := entry.API("POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(list.Instances...),
			Mode: apiv1.ModeOffline, ForceStop: true, Generate: true}, &op); code != 202 {
			b.Fatalf("reset: %d", code)
		}
		var victim string
		testutil.WaitFor(b, time.Minute, "running items on every replica", func() bool {
			var n int
			err := db.QueryRow(`SELECT attempted_by[array_length(attempted_by, 1)], count(*) FROM river_job WHERE state = 'running'
				GROUP BY 1 ORDER BY 2 DESC LIMIT 1`).Scan(&victim, &n)
			return err == nil && n > 0 && procs[victim] != nil
		})
		p := procs[victim]
		p.Kill()
		delete(procs, victim)
		testutil.WaitFor(b, time.Minute, "the dead replica's items resumed", func() bool {
			var n int
			err := db.QueryRow(`SELECT count(*) FROM river_job WHERE state = 'running'
				AND attempted_by[array_length(attempted_by, 1)] = $1`, victim).Scan(&n)
			return err == nil && n == 0
		})
		times = append(times, time.Since(p.KilledAt))
		b.StopTimer()
		start(fmt.Sprintf("f%d", i+3))
		// Let the batch end before the next.
		for op.Status == apiv1.OperationRunning || op.Status == "" {
			for _, q := range procs {
				q.API("GET", "/v1/operations/"+op.ID+"/wait?timeout=20s", nil, &op)
				break
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	p50, p99 := percentile(times, 50), percentile(times, 99)
	b.ReportMetric(p50.Seconds(), "failover-p50-s")
	b.ReportMetric(p99.Seconds(), "failover-p99-s")
	b.Logf("failover over %d kills: p50 %v, p99 %v (all: %v)", len(times), p50, p99, times)
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// BenchmarkReplicaThroughput is BenchmarkResetThroughput on PostgreSQL with
// one and with three replicas of one database (in this process, sharing
// the simulated fleet in the database), in the same run: 100 batches of
// 100 online resets posted round-robin over the replicas, completed resets
// per second, and CPU (this process and PostgreSQL) and statements (every
// replica's pool) per reset.
//
// Each replica's pool and workers are either the defaults (32 connections,
// 200 workers: three replicas bring three times the concurrency to the
// same database) or "shared", the defaults divided among the replicas, as
// an operator sizes replicas sharing one database server (docs/ha.md).
// BenchmarkOneAgainstThreeReplicas compares one replica with three shared
// more fairly.
func BenchmarkReplicaThroughput(b *testing.B) {
	for _, tc := range []struct {
		n      int
		shared bool
	}{{1, false}, {3, false}, {3, true}} {
		// replicas=1, replicas=3/defaults and replicas=3/shared: names
		// that -bench can select one at a time.
		name := fmt.Sprintf("replicas=%d", tc.n)
		switch {
		case tc.shared:
			name += "/shared"
		case tc.n > 1:
			name += "/defaults"
		}
		b.Run(name, func(b *testing.B) {
			dbURL, keyFile := storetest.PostgresURL(b), servertest.WriteSealingKey(b, 24)
			reps := startReplicaSet(b, tc.n, tc.shared, dbURL, keyFile, "t")
			insts := seedReplicaLoad(b, reps[0])
			// Untimed first: the steady state, not every pool's first
			// connections and plans.
			resetRound(b, reps, insts, 10, "warm-up")
			var sum replicaRun
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sum.add(timedRound(b, reps, insts, fmt.Sprint(i)))
			}
			b.ReportMetric(sum.rate(), "resets/s")
			b.ReportMetric(sum.cpuPerReset(), "cpu-ms/reset")
			b.ReportMetric(sum.stmtsPerReset(), "pg-stmts/reset")
		})
	}
}

var replicaPairs = flag.Int("replica-pairs", 6, "pairs of rounds of BenchmarkOneAgainstThreeReplicas")

// BenchmarkOneAgainstThreeReplicas compares one replica with three shared
// (BenchmarkReplicaThroughput's replicas=1 and replicas=3/shared) in
// -replica-pairs pairs of rounds, in this process and on one database.
// Each round starts its replicas, warms them up (1,000 resets, untimed),
// times 10,000 resets and stops them; one replica goes first in odd pairs
// and three in even ones. The two rounds of a pair are seconds apart on
// the same cluster, so neither a warmer cluster nor this shared machine's
// drift (a third of its speed within minutes) favours either side, as
// they did runs minutes apart. It reports each side's median and the
// median of the pairs' ratios:
//
//	go test -run '^$' -bench OneAgainstThreeReplicas -benchtime 1x ./internal/server/ -replica-pairs 10
func BenchmarkOneAgainstThreeReplicas(b *testing.B) {
	dbURL, keyFile := storetest.PostgresURL(b), servertest.WriteSealingKey(b, 24)
	seed := startReplicaSet(b, 1, false, dbURL, keyFile, "seed")
	insts := seedReplicaLoad(b, seed[0])
	seed[0].Stop()
	var ones, threes []replicaRun
	var ratios []float64
	round := func(p, n int) replicaRun {
		b.StopTimer()
		reps := startReplicaSet(b, n, n > 1, dbURL, keyFile, fmt.Sprintf("p%d-%d-", p, n))
		resetRound(b, reps, insts, 10, "warm-up")
		b.StartTimer()
		r := timedRound(b, reps, insts, fmt.Sprintf("%d-%d", p, n))
		b.StopTimer()
		for _, rep := range reps {
			rep.Stop()
		}
		return r
	}
	b.ResetTimer()
	for p := range *replicaPairs {
		var one, three replicaRun
		first := 1 + 2*(p%2) // one replica first in odd pairs, three in even ones
		if first == 1 {
			one = round(p, 1)
			three = round(p, 3)
		} else {
			three = round(p, 3)
			one = round(p, 1)
		}
		ones, threes = append(ones, one), append(threes, three)
		ratios = append(ratios, three.rate()/one.rate())
		b.Logf("pair %d (%d first): 1 replica %s; 3 shared %s; 3 shared / 1 = %.2f", p+1, first, one, three, ratios[p])
	}
	b.StopTimer()
	med := func(f func(replicaRun) float64, rs []replicaRun) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f(r)
		}
		return median(vs)
	}
	b.ReportMetric(med(replicaRun.rate, ones), "1-resets/s")
	b.ReportMetric(med(replicaRun.rate, threes), "3shared-resets/s")
	b.ReportMetric(med(replicaRun.cpuPerReset, ones), "1-cpu-ms/reset")
	b.ReportMetric(med(replicaRun.cpuPerReset, threes), "3shared-cpu-ms/reset")
	b.ReportMetric(med(replicaRun.stmtsPerReset, ones), "1-pg-stmts/reset")
	b.ReportMetric(med(replicaRun.stmtsPerReset, threes), "3shared-pg-stmts/reset")
	b.ReportMetric(median(ratios), "3shared/1-median")
	b.ReportMetric(0, "ns/op")
}

// median is the middle of vs (the mean of the two middle ones for an even
// count).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// startReplicaSet starts n in-process replicas of the database at dbURL,
// with the defaults' pool and workers each, or (shared) those divided
// among the n; their ids start with tag.
func startReplicaSet(b *testing.B, n int, shared bool, dbURL, keyFile, tag string) []*servertest.Server {
	cfg := engine.DefaultConfig()
	if shared {
		dbURL += fmt.Sprintf("&pool_max_conns=%d", (store.DefaultMaxConns+n-1)/n)
		cfg.MaxWorkers = (cfg.MaxWorkers + n - 1) / n
	}
	var reps []*servertest.Server
	for i := range n {
		reps = append(reps, servertest.Start(b, servertest.WithAdminKey(procAdmin),
			servertest.WithEngine(cfg), servertest.WithConfig(func(c *server.Config) {
				c.DatabaseURL, c.SecretKeyFile, c.ReplicaID = dbURL, keyFile, fmt.Sprintf("%s%d", tag, i)
			})))
	}
	return reps
}

// seedReplicaLoad adds 10,000 simulated machines to the database (the
// simulated fleet lives there, shared by every replica) and lists them.
func seedReplicaLoad(b *testing.B, rep *servertest.Server) []apiv1.Instance {
	if _, err := demo.SeedLoad(b.Context(), rep.Service(), rep.Sim(), 10000, 0, 0); err != nil {
		b.Fatal(err)
	}
	e := &env{t: b, s: rep, srv: rep.Server, url: rep.URL, admin: key{procAdmin.ID, procAdmin.Secret}}
	e.http.URL = rep.URL
	return listLoad(e)
}

// resetRound resets batches*100 of insts, the POSTs spread round-robin
// over reps and each operation waited for on the next replica.
func resetRound(b *testing.B, reps []*servertest.Server, insts []apiv1.Instance, batches int, tag string) {
	n := len(reps)
	var wg sync.WaitGroup
	opIDs := make([]string, batches)
	for j := range batches {
		wg.Go(func() {
			var op apiv1.Operation
			reps[j%n].MustDo(procAdmin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(insts[j*100 : (j+1)*100]...),
				Mode: apiv1.ModeOnline, Password: fmt.Sprintf("Bench-pw-%s-%d!", tag, j)}, 202, &op)
			opIDs[j] = op.ID
		})
	}
	wg.Wait()
	for j, id := range opIDs {
		if op := reps[(j+1)%n].Wait(procAdmin, id); op.Status != apiv1.OperationSucceeded {
			b.Fatalf("operation %s: %s", id, op.Status)
		}
	}
}

// replicaRun is what a timed round of resets cost.
type replicaRun struct {
	resets       float64
	elapsed, cpu time.Duration // cpu: this process's and PostgreSQL's
	pgCPU        time.Duration // PostgreSQL's share of cpu
	stmts        int64         // every replica's pool's
}

func (r *replicaRun) add(o replicaRun) {
	r.resets, r.elapsed, r.cpu, r.pgCPU, r.stmts = r.resets+o.resets, r.elapsed+o.elapsed, r.cpu+o.cpu, r.pgCPU+o.pgCPU, r.stmts+o.stmts
}

func (r replicaRun) rate() float64          { return r.resets / r.elapsed.Seconds() }
func (r replicaRun) cpuPerReset() float64   { return float64(r.cpu) / 1e6 / r.resets }
func (r replicaRun) stmtsPerReset() float64 { return float64(r.stmts) / r.resets }

func (r replicaRun) String() string {
	return fmt.Sprintf("%.1f/s (%.2f ms of CPU, %.2f of it PostgreSQL's, %.2f statements per reset)", r.rate(), r.cpuPerReset(),
		float64(r.pgCPU)/1e6/r.resets, r.stmtsPerReset())
}

// timedRound resets all 10,000 machines of insts (100 batches) on reps
// and measures it.
func timedRound(b *testing.B, reps []*servertest.Server, insts []apiv1.Instance, tag string) replicaRun {
	pg := pgtest.Shared(b)
	stmts := func() int64 {
		var s int64
		for _, r := range reps {
			s += r.Store().DatabaseStatements()
		}
		return s
	}
	cpu0, pg0, st0 := processCPU(), pg.CPU(), stmts()
	start := time.Now()
	resetRound(b, reps, insts, 100, tag)
	elapsed, pgCPU := time.Since(start), pg.CPU()-pg0
	return replicaRun{resets: 10000, elapsed: elapsed, cpu: processCPU() - cpu0 + pgCPU, pgCPU: pgCPU, stmts: stmts() - st0}
}

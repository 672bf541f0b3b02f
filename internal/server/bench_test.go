package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// benchEnv is a server with n zero-latency simulated instances, on SQLite
// or on PostgreSQL (the test binary's cluster, fsync on). The simulated
// machines keep their state in a file of their own on both, so that the
// two figures differ by the server's database alone; what the fleet costs
// in the server's database (the PostgreSQL default, for replicas to share
// it) is BenchmarkResetThroughputSimFleet's.
func benchEnv(b *testing.B, n int, db string) (*env, []apiv1.Instance) {
	b.Helper()
	return benchEnvFleet(b, n, db, "file")
}

// listLoad lists the instances of the load tenant.
func listLoad(e *env) []apiv1.Instance {
	var all []apiv1.Instance
	cursor := ""
	for {
		var page apiv1.InstanceList
		e.mustDo(e.admin, "GET", "/v1/instances?tenant=load&limit=1000&cursor="+cursor, nil, 200, &page)
		all = append(all, page.Instances...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	return all
}

// benchDatabases runs fn once per database, in the same run, so their
// figures compare.
func benchDatabases(b *testing.B, fn func(b *testing.B, db string)) {
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) { fn(b, db) })
	}
}

// costMeter measures what a stretch of work cost: CPU time of this
// process (the whole server runs in it) and of the PostgreSQL cluster,
// and SQL statements (the store's own; on PostgreSQL also every statement
// of the pool, River's included).
type costMeter struct {
	e                 *env
	cpu, pgCPU        time.Duration
	stmts, poolStmts  int64
	dCPU, dPG         time.Duration
	dStmts, dPoolStmt int64
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *costMeter) pg() time.Duration {
	if m.e.databaseURL == "" {
		return 0
	}
	return pgtest.Shared(m.e.t).CPU()
}

func (m *costMeter) start() {
	st := m.e.srv.Store()
	m.cpu, m.pgCPU, m.stmts, m.poolStmts = processCPU(), m.pg(), st.Statements(), st.DatabaseStatements()
}

func (m *costMeter) stop() {
	st := m.e.srv.Store()
	m.dCPU += processCPU() - m.cpu
	m.dPG += m.pg() - m.pgCPU
	m.dStmts += st.Statements() - m.stmts
	m.dPoolStmt += st.DatabaseStatements() - m.poolStmts
}

func (m *costMeter) report(b *testing.B, resets int) {
	n := float64(resets)
	b.ReportMetric(float64(m.dCPU+m.dPG)/1e6/n, "cpu-ms/reset")
	b.ReportMetric(float64(m.dPG)/1e6/n, "pg-cpu-ms/reset")
	b.ReportMetric(float64(m.dStmts)/n, "store-stmts/reset")
	if m.e.databaseURL != "" {
		b.ReportMetric(float64(m.dPoolStmt)/n, "pg-stmts/reset")
	}
}

// BenchmarkResetThroughput submits 100 batches of 100 online resets at once
// through the native API (sim driver at zero latency) and reports
// completed instance resets per second, from the first POST to the last
// item's end, and what each reset cost, on SQLite and on PostgreSQL.
func BenchmarkResetThroughput(b *testing.B) {
	benchDatabases(b, func(b *testing.B, db string) {
		e, insts := benchEnv(b, 10000, db)
		measureResetThroughput(b, e, insts)
	})
}

// measureResetThroughput is BenchmarkResetThroughput's measure on the
// 10,000 instances insts of e.
func measureResetThroughput(b *testing.B, e *env, insts []apiv1.Instance) {
	m := &costMeter{e: e}
	// One untimed round first: the figure is of a server in its steady
	// state, not of the pool's first connections and their first plans.
	resetAll(b, e, insts, 10, "warm-up")
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		m.start()
		start := time.Now()
		resetAll(b, e, insts, len(insts)/100, fmt.Sprint(i))
		total += time.Since(start)
		m.stop()
	}
	b.ReportMetric(float64(10000*b.N)/total.Seconds(), "resets/s")
	m.report(b, 10000*b.N)
}

// resetAll resets the first batches*100 of insts online, in batches of
// 100 POSTed at once, and waits for every operation to succeed.
func resetAll(b *testing.B, e *env, insts []apiv1.Instance, batches int, round string) {
	var wg sync.WaitGroup
	opIDs := make([]string, batches)
	for j := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var op apiv1.Operation
			e.mustDo(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(insts[j*100 : (j+1)*100]...),
				Mode: apiv1.ModeOnline, Password: fmt.Sprintf("Bench-pw-%s-%d!", round, j)}, 202, &op)
			opIDs[j] = op.ID
		}()
	}
	wg.Wait()
	for _, id := range opIDs {
		if op := e.wait(e.admin, id); op.Status != apiv1.OperationSucceeded {
			b.Fatalf("operation %s: %s", id, op.Status)
		}
	}
}

// BenchmarkResetPostLatency sends single-instance reset POSTs at a fixed
// 200 requests per second (open loop) for 10 seconds and reports the p50
// and p99 latency of the POST, on SQLite and on PostgreSQL.
func BenchmarkResetPostLatency(b *testing.B) {
	benchDatabases(b, func(b *testing.B, db string) {
		e, insts := benchEnv(b, 2000, db)
		const rps, seconds = 200, 10
		// Two untimed seconds at the same rate first: the figures are of
		// the steady state, not of the pool's first connections.
		postResetsAtRate(b, e, insts, rps, 2*rps)
		b.ResetTimer()
		m := &costMeter{e: e}
		var lat []time.Duration
		for i := 0; i < b.N; i++ {
			m.start()
			lat = append(lat, postResetsAtRate(b, e, insts, rps, rps*seconds)...)
			m.stop()
		}
		m.report(b, len(lat))
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	})
}

// postResetsAtRate sends n single-instance online reset POSTs at rps a
// second (open loop: a slow answer does not delay the next request) and
// returns their latencies.
func postResetsAtRate(b *testing.B, e *env, insts []apiv1.Instance, rps, n int) []time.Duration {
	tick := time.NewTicker(time.Second / time.Duration(rps))
	defer tick.Stop()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	for k := range n {
		<-tick.C
		in := insts[k%len(insts)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: []string{in.ID},
				Mode: apiv1.ModeOnline, Password: "Latency-pw-42!"})
			lat[k] = time.Since(t0)
			if r.status != 202 && r.errCode() != core.CodeInstanceBusy {
				b.Errorf("POST: %d %s", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	return lat
}

// BenchmarkServerMemory runs the real server with 10,000 simulated
// instances, puts 1,000 items in flight (offline resets waiting on slow
// simulated shutdowns) and reports the process's resident memory.
func BenchmarkServerMemory(b *testing.B) {
	bin := testutil.BuildBinary(b, "github.com/fleetpass/fleetpass/cmd/fleetpass")
	for i := 0; i < b.N; i++ {
		dataDir := b.TempDir()
		addr := testutil.FreePort(b)
		p := startProc(b, bin, dataDir, addr, filepath.Join(b.TempDir(), "log"),
			"--sim-instances", "10000", "--sim-shutdown-time", "10m", "--shutdown-timeout", "20m")
		var insts []apiv1.Instance
		cursor := ""
		for {
			var list apiv1.InstanceList
			p.API("GET", "/v1/instances?tenant=load&limit=1000&cursor="+cursor, nil, &list)
			insts = append(insts, list.Instances...)
			if cursor = list.NextCursor; cursor == "" {
				break
			}
		}
		for j := 0; j < 10; j++ {
			var op apiv1.Operation
			if code := p.API("POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(insts[j*100 : (j+1)*100]...),
				Mode: apiv1.ModeOffline, ForceStop: true, Password: "Memory-pw-42!"}, &op); code != 202 {
				b.Fatalf("reset: %d", code)
			}
		}
		// Every item must be in flight, waiting on its shutdown, when the
		// memory is read: else the figure is of a lighter load.
		testutil.WaitFor(b, 5*time.Minute, "1000 items waiting on their shutdowns", func() bool {
			var ops apiv1.OperationList
			p.API("GET", "/v1/operations?limit=10", nil, &ops)
			waiting := 0
			for _, op := range ops.Operations {
				for _, it := range op.Items {
					if it.Step == apiv1.StepShuttingDown {
						waiting++
					}
				}
			}
			return waiting == 1000
		})
		runtimeSettle()
		b.ReportMetric(float64(rssKiB(b, p.Cmd.Process.Pid))/1024, "rss-MiB")
		p.Cmd.Process.Signal(syscall.SIGTERM)
	}
}

func runtimeSettle() { time.Sleep(2 * time.Second) }

func rssKiB(b *testing.B, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

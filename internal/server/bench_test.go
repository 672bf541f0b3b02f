package server_test

import (
	"context"
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
	"github.com/fleetpass/fleetpass/internal/demo"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// benchEnv is a server with n zero-latency simulated instances.
func benchEnv(b *testing.B, n int) (*env, []apiv1.Instance) {
	b.Helper()
	e := newEnv(b, envOpts{engine: engine.DefaultConfig()})
	if _, err := demo.SeedLoad(context.Background(), e.srv.Service(), e.srv.Sim(), n, 0, 0); err != nil {
		b.Fatal(err)
	}
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
	return e, all
}

// BenchmarkResetThroughput submits 100 batches of 100 online resets at once
// through the native API (sim driver at zero latency, SQLite) and reports
// completed instance resets per second, from the first POST to the last
// item's end.
func BenchmarkResetThroughput(b *testing.B) {
	e, insts := benchEnv(b, 10000)
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var wg sync.WaitGroup
		opIDs := make([]string, 100)
		for j := 0; j < 100; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var op apiv1.Operation
				e.mustDo(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(insts[j*100 : (j+1)*100]...),
					Mode: apiv1.ModeOnline, Password: fmt.Sprintf("Bench-pw-%d-%d!", i, j)}, 202, &op)
				opIDs[j] = op.ID
			}()
		}
		wg.Wait()
		for _, id := range opIDs {
			if op := e.wait(e.admin, id); op.Status != apiv1.OperationSucceeded {
				b.Fatalf("operation %s: %s", id, op.Status)
			}
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(10000*b.N)/total.Seconds(), "resets/s")
}

// BenchmarkResetPostLatency sends single-instance reset POSTs at a fixed
// 200 requests per second (open loop) for 10 seconds and reports the p50
// and p99 latency of the POST.
func BenchmarkResetPostLatency(b *testing.B) {
	e, insts := benchEnv(b, 2000)
	const rps, seconds = 200, 10
	b.ResetTimer()
	var lat []time.Duration
	var mu sync.Mutex
	for i := 0; i < b.N; i++ {
		tick := time.NewTicker(time.Second / rps)
		var wg sync.WaitGroup
		for k := 0; k < rps*seconds; k++ {
			<-tick.C
			in := insts[k%len(insts)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: []string{in.ID},
					Mode: apiv1.ModeOnline, Password: "Latency-pw-42!"})
				d := time.Since(t0)
				if r.status != 202 && r.errCode() != core.CodeInstanceBusy {
					b.Errorf("POST: %d %s", r.status, r.body)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
		tick.Stop()
		wg.Wait()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
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
			p.api("GET", "/v1/instances?tenant=load&limit=1000&cursor="+cursor, nil, &list)
			insts = append(insts, list.Instances...)
			if cursor = list.NextCursor; cursor == "" {
				break
			}
		}
		for j := 0; j < 10; j++ {
			var op apiv1.Operation
			if code := p.api("POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(insts[j*100 : (j+1)*100]...),
				Mode: apiv1.ModeOffline, ForceStop: true, Password: "Memory-pw-42!"}, &op); code != 202 {
				b.Fatalf("reset: %d", code)
			}
		}
		// Every item must be in flight, waiting on its shutdown, when the
		// memory is read: else the figure is of a lighter load.
		testutil.WaitFor(b, 5*time.Minute, "1000 items waiting on their shutdowns", func() bool {
			var ops apiv1.OperationList
			p.api("GET", "/v1/operations?limit=10", nil, &ops)
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
		b.ReportMetric(float64(rssKiB(b, p.cmd.Process.Pid))/1024, "rss-MiB")
		p.cmd.Process.Signal(syscall.SIGTERM)
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

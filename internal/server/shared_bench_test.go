package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agent"
	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// envAgentStates names the file of agent states the helper process runs.
const envAgentStates = "FLEETPASS_SH_AGENT_STATES"

// TestShAgentFleetHelper is no test: BenchmarkIdleAgentsOverThreeReplicas
// runs the test binary again with it, so that its agents (the real agent
// connection code, many in one process) have a process, a CPU account and
// a file descriptor budget of their own. It prints "ready" once every
// agent reported ready, and stops when its standard input closes.
func TestShAgentFleetHelper(t *testing.T) {
	path := os.Getenv(envAgentStates)
	if path == "" {
		t.Skip("the agent process of BenchmarkIdleAgentsOverThreeReplicas")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var states []*agent.State
	if err := json.Unmarshal(data, &states); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var ready atomic.Int64
	var once sync.Once
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, st := range states {
		go func() {
			_ = agent.Run(ctx, st, agent.Options{Log: log,
				Setter: func(context.Context, string, []byte) agent.Result { return agent.Result{Code: agentproto.ResultOK} },
				OnReady: func() {
					if ready.Add(1) == int64(len(states)) {
						once.Do(func() { fmt.Println("ready") })
					}
				}})
		}()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
}

// BenchmarkIdleAgentsOverThreeReplicas measures what idle agents cost:
// FLEETPASS_BENCH_AGENTS agents (default 10,000) enrolled and long-polling
// three replicas on one PostgreSQL database, spread evenly, for 30 s of
// nothing to do. "notify" is this design (wake-ups by NOTIFY, a re-read
// every 30 s); "recheck5s" re-reads every 5 s, which cross-replica
// delivery relied on before NOTIFY. Per replica: database statements a
// second and CPU (the servers' process over three); the agents' process
// and PostgreSQL are reported whole.
//
//	go test -run '^$' -bench IdleAgentsOverThreeReplicas -benchtime 1x -timeout 30m ./internal/server/
func BenchmarkIdleAgentsOverThreeReplicas(b *testing.B) {
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("FLEETPASS_BENCH_AGENTS")); err == nil && v > 0 {
		n = v
	}
	for _, mode := range []struct {
		name    string
		recheck time.Duration
	}{{"notify", 30 * time.Second}, {"recheck5s", 5 * time.Second}} {
		b.Run(mode.name, func(b *testing.B) { benchIdleAgents(b, n, mode.recheck) })
	}
}

func benchIdleAgents(b *testing.B, n int, recheck time.Duration) {
	// The production engine: the test kit's fast one polls River's queue
	// every 10 ms, which would drown what the agents cost.
	rs := shReplicas(b, 3, servertest.WithAgent(agentserver.Config{Recheck: recheck}), servertest.WithEngine(engine.DefaultConfig()),
		servertest.WithConfig(func(c *server.Config) { c.MaxInstancesPerTenant = n + 100 }))
	ctx := context.Background()
	p := core.Principal{Kind: "key", ID: "bench", Tenant: "acme", Admin: true}
	states := make([]*agent.State, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := rs[i%3]
				tok, err := r.Service().CreateAgentToken(ctx, p, apiv1.AgentTokenCreate{Tenant: "acme", InstanceName: fmt.Sprintf("idle-%05d", i)})
				if err == nil {
					states[i], err = agent.Enroll(ctx, agent.EnrollOptions{Server: r.URL, Token: tok.Token, Hostname: fmt.Sprintf("idle-%05d", i)})
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("%d agents enrolled in %s", n, time.Since(start).Round(time.Second))

	path := filepath.Join(b.TempDir(), "agents.json")
	data, _ := json.Marshal(states)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestShAgentFleetHelper$", "-test.v=false")
	cmd.Env = append(os.Environ(), envAgentStates+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	readyc := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				readyc <- true
			}
		}
	}()
	select {
	case <-readyc:
	case <-time.After(10 * time.Minute):
		b.Fatal("the agents did not all report ready")
	}
	b.Logf("%d agents ready %s after the start of the enrolment", n, time.Since(start).Round(time.Second))
	// Let every agent's poll settle into its held rhythm.
	time.Sleep(10 * time.Second)

	pg := pgtest.Shared(b)
	stmts := func() []int64 {
		out := make([]int64, len(rs))
		for i, r := range rs {
			out[i] = r.Store().DatabaseStatements()
		}
		return out
	}
	const window = 30 * time.Second
	s0, cpu0, agents0, pg0 := stmts(), selfCPU(), procCPU(cmd.Process.Pid), pg.CPU()
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	s1, cpu1, agents1, pg1 := stmts(), selfCPU(), procCPU(cmd.Process.Pid), pg.CPU()
	var total int64
	for i := range rs {
		per := float64(s1[i]-s0[i]) / window.Seconds()
		b.Logf("replica %d: %.0f statements/s", i, per)
		total += s1[i] - s0[i]
	}
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / window.Seconds() }
	b.ReportMetric(float64(total)/3/window.Seconds(), "stmts/s/replica")
	b.ReportMetric(pct(cpu1-cpu0)/3, "cpu%/replica")
	b.ReportMetric(pct(agents1-agents0), "agents-cpu%")
	b.ReportMetric(pct(pg1-pg0), "pg-cpu%")
	b.ReportMetric(0, "ns/op")
}

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's user and system CPU time, from /proc.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

package realguest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetpass/fleetpass/internal/agent"
	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

// The benchmarks of docs/benchmarks.md, section "Agent channel". They are
// slow and need Ansible (the script installs it), so they run only when
// asked for:
//
//	go test -run '^$' -bench 'AgentChannel' -benchtime 1x -timeout 60m ./internal/realguest/

func benchGuests() int {
	if n, err := strconv.Atoi(os.Getenv("FLEETPASS_BENCH_GUESTS")); err == nil && n > 0 {
		return n
	}
	return 100
}

// BenchmarkAgentChannelVsSSHAndAnsible resets the same user on the same
// guests three ways and times each until every guest is verified by an SSH
// login with the new password: fleetpass through the agent channel, a plain
// parallel ssh+chpasswd loop, and Ansible's user module.
func BenchmarkAgentChannelVsSSHAndAnsible(b *testing.B) {
	n := benchGuests()
	// The agent channel's production settings: the tests' 5 s silence
	// counts an agent starved of CPU by the baselines' 100 sessions as dead.
	e := newEnv(b, envOpts{agent: agentserver.DefaultConfig()})
	rootPW, old := newPassword(), newPassword()
	ms := make([]*machine, n)
	setup := time.Now()
	for i := range ms {
		ms[i] = e.agentGuestNoWait(fmt.Sprintf("bench-%03d", i), old)
		if err := ms[i].g.SetPassword("root", rootPW); err != nil {
			b.Fatal(err)
		}
		// The guests share the host's /root, whose .bashrc may start slow
		// tools (pyenv on the CI machines): the baselines' root sessions
		// get a plain shell, as on a server.
		if _, err := ms[i].g.Run("usermod", "--shell", "/bin/sh", "root"); err != nil {
			b.Fatal(err)
		}
	}
	for _, m := range ms {
		e.waitAlive(m)
	}
	b.Logf("%d guests up with their agents in %s", n, time.Since(setup).Round(time.Second))
	// Every method is timed until SSH logins verify it, and a guest's
	// first login is slower than later ones (sshd and PAM read their files
	// cold): log in once everywhere first, so the method timed first is
	// not charged for warming the guests up.
	warm := time.Now()
	verifyAll(b, ms, old)
	b.Logf("warm-up: %d SSH logins in %s", n, time.Since(warm).Round(time.Millisecond))

	// fleetpass, agent channel, online.
	pw1 := newPassword()
	start := time.Now()
	op := e.reset(apiv1.ModeOnline, false, pw1, ms...)
	confirmed := time.Since(start)
	if op.Status != apiv1.OperationSucceeded {
		b.Fatalf("fleetpass batch: %s", op.Status)
	}
	verifyAll(b, ms, pw1)
	fleetpass := time.Since(start)
	b.Logf("fleetpass: all %d confirmed in %s, verified by SSH in %s", n, confirmed.Round(time.Millisecond), fleetpass.Round(time.Millisecond))

	// Agent RSS while idle, after the batch.
	time.Sleep(5 * time.Second)
	rss := agentRSS(b, e.agentBin)
	b.Logf("agent idle RSS: median %d KiB, max %d KiB (%d agents)", rss[len(rss)/2], rss[len(rss)-1], len(rss))

	// A plain parallel loop: one SSH connection per guest as root, running
	// chpasswd with the line on its standard input.
	pw2 := newPassword()
	start = time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range ms {
		wg.Go(func() { errs[i] = sshChpasswd(m, rootPW, user+":"+pw2+"\n") })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("ssh chpasswd on %s: %v", ms[i].name, err)
		}
	}
	verifyAll(b, ms, pw2)
	sshLoop := time.Since(start)
	b.Logf("ssh loop: verified in %s", sshLoop.Round(time.Millisecond))

	// Ansible: ansible.builtin.user with a SHA-512 crypt hash, forks = n.
	pw3 := newPassword()
	start = time.Now()
	playbook, err := runAnsible(b, ms, rootPW, pw3, nil)
	if err != nil {
		// The comparison rests on this baseline: without it the benchmark
		// has measured nothing worth reporting.
		b.Fatalf("the Ansible baseline did not run: %v", err)
	}
	verifyAll(b, ms, pw3)
	ansible := time.Since(start)
	b.Logf("ansible: playbook %s, verified in %s", playbook.Round(time.Millisecond), ansible.Round(time.Millisecond))

	// The same three, each guest verified as soon as its method reports it
	// changed, as an operator watching the results would: the logins
	// overlap the work instead of following it.
	pipe := pipelined(b, e, ms, rootPW)

	b.ReportMetric(confirmed.Seconds(), "fleetpass-confirmed-s")
	b.ReportMetric(fleetpass.Seconds(), "fleetpass-verified-s")
	b.ReportMetric(sshLoop.Seconds(), "ssh-loop-verified-s")
	b.ReportMetric(ansible.Seconds(), "ansible-verified-s")
	b.ReportMetric(float64(rss[len(rss)/2])/1024, "agent-idle-rss-MiB-median")
	for k, d := range pipe {
		b.ReportMetric(d.Seconds(), k+"-pipelined-s")
	}
	b.Logf("pipelined (each guest verified as soon as it is reported changed): fleetpass %s, ssh loop %s, ansible %s",
		pipe["fleetpass"].Round(time.Millisecond), pipe["ssh-loop"].Round(time.Millisecond), pipe["ansible"].Round(time.Millisecond))
	b.Logf("guests %d: fleetpass confirmed %s, verified %s; ssh loop %s; ansible %s; agent idle RSS median %d KiB, max %d KiB",
		n, confirmed.Round(time.Millisecond), fleetpass.Round(time.Millisecond), sshLoop.Round(time.Millisecond),
		ansible.Round(time.Millisecond), rss[len(rss)/2], rss[len(rss)-1])
}

// pipelined times each method until every guest is verified, verifying
// each guest as soon as the method reports it changed: fleetpass's item
// events, the end of each ssh session, Ansible's per-host result lines.
func pipelined(b *testing.B, e *env, ms []*machine, rootPW string) map[string]time.Duration {
	b.Helper()
	out := map[string]time.Duration{}
	byInstance := map[string]*machine{}
	byName := map[string]*machine{}
	for _, m := range ms {
		byInstance[m.instance], byName[m.name] = m, m
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	verify := func(m *machine, pw string) {
		wg.Go(func() {
			if err := m.g.CheckLogin(user, pw); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
				mu.Unlock()
			}
		})
	}
	check := func(method string) {
		wg.Wait()
		if len(errs) > 0 {
			b.Fatalf("%s, pipelined: %v", method, errs[0])
		}
	}

	// fleetpass: follow the operation's events.
	for _, m := range ms {
		e.waitAlive(m)
	}
	pw := newPassword()
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.instance
	}
	start := time.Now()
	op, err := e.client.ResetPassword(b.Context(), apiv1.PasswordReset{InstanceIDs: ids, User: user, Mode: apiv1.ModeOnline, Password: pw})
	if err != nil {
		b.Fatal(err)
	}
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	for ev, err := range e.client.Events(ctx, client.EventFilter{OperationID: op.ID, LastEventID: "0"}) {
		if err != nil {
			if errors.Is(err, client.ErrStreamInterrupted) {
				continue
			}
			b.Fatalf("events: %v", err)
		}
		if ev.Item == nil || seen[ev.Item.InstanceID] {
			continue
		}
		switch ev.Item.State {
		case apiv1.ItemSucceeded:
			seen[ev.Item.InstanceID] = true
			verify(byInstance[ev.Item.InstanceID], pw)
		case apiv1.ItemFailed:
			b.Fatalf("fleetpass item %s failed: %s", ev.Item.InstanceName, ev.Item.Message)
		}
		if len(seen) == len(ms) {
			break
		}
	}
	cancel()
	if len(seen) < len(ms) {
		// The stream ended (the deadline, most likely) before every item
		// did: a time measured now would be the deadline's.
		b.Fatalf("fleetpass, pipelined: %d of %d items ended before the event stream did (%v)", len(seen), len(ms), ctx.Err())
	}
	check("fleetpass")
	out["fleetpass"] = time.Since(start)

	// ssh loop: each session's guest verified when it ends.
	pw = newPassword()
	start = time.Now()
	for _, m := range ms {
		wg.Go(func() {
			if err := sshChpasswd(m, rootPW, user+":"+pw+"\n"); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			verify(m, pw)
		})
	}
	check("ssh loop")
	out["ssh-loop"] = time.Since(start)

	pw = newPassword()
	start = time.Now()
	changed := 0
	if _, err := runAnsible(b, ms, rootPW, pw, func(host string) {
		if m := byName[host]; m != nil {
			changed++
			verify(m, pw)
		}
	}); err != nil {
		b.Fatal(err)
	}
	if changed != len(ms) {
		b.Fatalf("ansible, pipelined: %d of %d hosts reported changed", changed, len(ms))
	}
	check("ansible")
	out["ansible"] = time.Since(start)
	return out
}

// verifyAll logs in to every guest with pw, in parallel.
func verifyAll(b *testing.B, ms []*machine, pw string) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(ms))
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.g.CheckLogin(user, pw) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("%s: login with the new password: %v", ms[i].name, err)
		}
	}
}

func sshChpasswd(m *machine, rootPW, line string) error {
	c, err := ssh.Dial("tcp", m.g.SSHAddr(), &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.Password(rootPW)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: time.Minute})
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	s.Stdin = strings.NewReader(line)
	if out, err := s.CombinedOutput("chpasswd"); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// runAnsible runs a one-task playbook over all guests and returns its wall
// time. The inventory, with root's password for sshpass, lives in a
// private temporary directory for the run only.
func runAnsible(b *testing.B, ms []*machine, rootPW, newPW string, onChanged func(host string)) (time.Duration, error) {
	b.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		return 0, fmt.Errorf("ansible-playbook not installed (apt-get install ansible sshpass)")
	}
	dir := b.TempDir()
	hashCmd := exec.Command("openssl", "passwd", "-6", "-stdin")
	hashCmd.Stdin = strings.NewReader(newPW + "\n")
	hash, err := hashCmd.Output()
	if err != nil {
		return 0, fmt.Errorf("hash the password: %w", err)
	}
	var inv strings.Builder
	inv.WriteString("[guests]\n")
	for _, m := range ms {
		host, port, _ := strings.Cut(m.g.SSHAddr(), ":")
		fmt.Fprintf(&inv, "%s ansible_host=%s ansible_port=%s\n", m.name, host, port)
	}
	fmt.Fprintf(&inv, "[guests:vars]\nansible_user=root\nansible_password=%s\nansible_python_interpreter=/usr/bin/python3\n", rootPW)
	playbook := fmt.Sprintf(`- hosts: guests
  gather_facts: false
  tasks:
    - ansible.builtin.user:
        name: %s
        password: %q
`, user, strings.TrimSpace(string(hash)))
	for name, body := range map[string]string{"inventory": inv.String(), "playbook.yml": playbook,
		// Pipelining sends each module over the ssh session's stdin, so no
		// file is transferred (the sftp/scp step is what failed on a fresh
		// machine, whose guests had no sftp subsystem).
		"ansible.cfg": fmt.Sprintf("[defaults]\nhost_key_checking = False\nforks = %d\nlocal_tmp = %s/tmp\n"+
			"[ssh_connection]\npipelining = True\n", len(ms), dir)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			return 0, err
		}
	}
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ansible-playbook", "-i", "inventory", "playbook.yml")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ANSIBLE_CONFIG="+filepath.Join(dir, "ansible.cfg"))
	var out, errOut bytes.Buffer
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("ansible-playbook: %w", err)
	}
	// Ansible prints each host's result as it comes in: "changed: [name]".
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if host, ok := strings.CutPrefix(line, "changed: ["); ok && onChanged != nil {
			onChanged(strings.TrimSuffix(host, "]"))
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("ansible-playbook: %w\n%s\n%s", err, out.String(), errOut.String())
	}
	return time.Since(start), nil
}

// agentRSS returns the resident set sizes (KiB) of the running agents,
// sorted.
func agentRSS(b *testing.B, bin string) []int {
	b.Helper()
	var out []int
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		cmd, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(cmd, []byte(bin+"\x00run\x00")) {
			continue
		}
		if kb := vmRSS(filepath.Dir(p)); kb > 0 {
			out = append(out, kb)
		}
	}
	if len(out) == 0 {
		b.Fatal("no agent process found")
	}
	sort.Ints(out)
	return out
}

func vmRSS(procDir string) int {
	status, err := os.ReadFile(filepath.Join(procDir, "status"))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

// cpuTicks is a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// BenchmarkAgentChannelServerWithThousandAgents runs a real server process
// and 1,000 agents (the agent's real connection code, in this process,
// over loopback) and measures the server's CPU and memory while they stay
// connected, then while 100 of them get a password.
func BenchmarkAgentChannelServerWithThousandAgents(b *testing.B) {
	const agents = 1000
	srvBin := buildServer(b)
	dir := b.TempDir()
	addr := freeAddr(b)
	logPath := filepath.Join(dir, "server.log")
	// The production defaults: 15 s inventory sync, 45 s silence, 25 s hold.
	p := startServerProc(b, srvBin, filepath.Join(dir, "data"), addr, logPath, "15s",
		"FLEETPASS_AGENT_SILENCE=", "FLEETPASS_AGENT_POLL_HOLD=")
	c, err := client.New("http://"+addr, adminKeyID, adminSecret)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	if _, err := c.CreateTenant(ctx, apiv1.TenantCreate{Name: tenant}); err != nil {
		b.Fatal(err)
	}
	states := make([]*agent.State, agents)
	for i := range states {
		tok, err := c.CreateAgentToken(ctx, apiv1.AgentTokenCreate{Tenant: tenant, InstanceName: fmt.Sprintf("load-%04d", i)})
		if err != nil {
			b.Fatal(err)
		}
		if states[i], err = agent.Enroll(ctx, agent.EnrollOptions{Server: "http://" + addr, Token: tok.Token, Hostname: "load"}); err != nil {
			b.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready sync.WaitGroup
	ready.Add(agents)
	selfBefore := selfRSS()
	for _, st := range states {
		var once sync.Once
		go agent.Run(runCtx, st, agent.Options{Log: log, OnReady: func() { once.Do(ready.Done) },
			Setter: func(context.Context, string, []byte) agent.Result {
				return agent.Result{Code: agentproto.ResultOK}
			}})
	}
	start := time.Now()
	ready.Wait()
	b.Logf("%d agents ready in %s", agents, time.Since(start).Round(time.Millisecond))
	pid := p.cmd.Process.Pid
	time.Sleep(10 * time.Second) // settle
	t0, c0 := time.Now(), cpuTicks(pid)
	time.Sleep(60 * time.Second)
	idleCPU := float64(cpuTicks(pid)-c0) / 100 / time.Since(t0).Seconds()
	idleRSS := vmRSS(fmt.Sprintf("/proc/%d", pid))

	// 100 of them get a password while the others stay connected.
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = states[i].InstanceID
	}
	c1 := cpuTicks(pid)
	start = time.Now()
	op, err := c.ResetPassword(ctx, apiv1.PasswordReset{InstanceIDs: ids, Mode: apiv1.ModeOnline, Password: newPassword()})
	if err != nil {
		b.Fatal(err)
	}
	for {
		cur, err := c.WaitOperationFor(ctx, op.ID, 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if cur.Status != apiv1.OperationRunning {
			if cur.Status != apiv1.OperationSucceeded {
				b.Fatalf("batch under load: %s", cur.Status)
			}
			break
		}
	}
	batch := time.Since(start)
	batchCPU := float64(cpuTicks(pid)-c1) / 100
	b.ReportMetric(idleCPU*100, "server-idle-cpu-%")
	b.ReportMetric(float64(idleRSS)/1024, "server-rss-MiB")
	b.ReportMetric(batch.Seconds(), "batch100-under-load-s")
	b.Logf("1000 agents connected: server CPU %.1f%% of one core, RSS %d KiB; a batch of 100 took %s (%.2f CPU-s); load generator RSS grew %d KiB",
		idleCPU*100, idleRSS, batch.Round(time.Millisecond), batchCPU, selfRSS()-selfBefore)
}

func selfRSS() int { return vmRSS("/proc/self") }

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

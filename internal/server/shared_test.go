package server_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agent"
	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// What replicas share through PostgreSQL: wake-ups (agents, events),
// rate limits, idempotency, sign-in counters. Each test runs two or three
// real in-process servers on one database, with one sealing key and one
// bootstrap admin key, as an operator's replicas behind a load balancer.

// shReplicas starts n servers on one fresh PostgreSQL database.
func shReplicas(t testing.TB, n int, opts ...servertest.Option) []*servertest.Server {
	t.Helper()
	url := storetest.PostgresURL(t)
	keyFile := filepath.Join(t.TempDir(), "secret.key")
	if _, err := sealer.LoadOrCreate(keyFile); err != nil {
		t.Fatal(err)
	}
	id, secret := core.NewKeyMaterial()
	admin := servertest.Key{ID: id, Secret: secret}
	var out []*servertest.Server
	for range n {
		o := append([]servertest.Option{servertest.WithAdminKey(admin), servertest.WithTenants("acme"),
			servertest.WithConfig(func(c *server.Config) { c.DatabaseURL, c.SecretKeyFile = url, keyFile })}, opts...)
		out = append(out, servertest.Start(t, o...))
	}
	return out
}

// shMachine is a machine whose operating system is a map of passwords,
// running the real agent code in process.
type shMachine struct {
	st *agent.State

	mu     sync.Mutex
	pw     map[string]string
	setAt  []time.Time
	cancel context.CancelFunc
	done   chan struct{}
}

// shEnroll enrols an agent through enrol and lets it poll poll.
func shEnroll(t *testing.T, enrol *servertest.Server, poll string, name string) *shMachine {
	t.Helper()
	var tok apiv1.AgentTokenCreated
	enrol.MustDo(enrol.Admin, "POST", "/v1/agent-tokens", apiv1.AgentTokenCreate{Tenant: "acme", InstanceName: name},
		http.StatusCreated, &tok)
	st, err := agent.Enroll(context.Background(), agent.EnrollOptions{Server: enrol.URL, Token: tok.Token, Hostname: name})
	if err != nil {
		t.Fatal(err)
	}
	st.Server = poll
	m := &shMachine{st: st, pw: map[string]string{"root": "initial"}}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		_ = agent.Run(ctx, st, agent.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Setter: m.set,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	}()
	t.Cleanup(func() { cancel(); <-m.done })
	return m
}

func (m *shMachine) set(_ context.Context, user string, pw []byte) agent.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pw[user]; !ok {
		return agent.Result{Code: agentproto.ResultUserNotFound, Message: "no such user"}
	}
	m.pw[user] = string(pw)
	m.setAt = append(m.setAt, time.Now())
	return agent.Result{Code: agentproto.ResultOK}
}

func (m *shMachine) password() (string, []time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pw["root"], slices.Clone(m.setAt)
}

func shWaitAlive(t *testing.T, srv *servertest.Server, ms []*shMachine) {
	t.Helper()
	for _, m := range ms {
		testutil.WaitFor(t, 30*time.Second, "agent "+m.st.AgentID+" alive", func() bool {
			return srv.Instance(srv.Admin, m.st.InstanceID).GuestAlive
		})
	}
}

// An agent long-polling replica A gets a password that replica B sends
// within 2 seconds, and B hears the agent's acknowledgement (taken by A)
// as fast: with the periodic re-read at 30 s, only the database's
// notifications can carry either in time.
func TestAgentsPollingOneReplicaGetWhatAnotherSendsWithinTwoSeconds(t *testing.T) {
	rs := shReplicas(t, 2, servertest.WithAgent(agentserver.Config{Recheck: 30 * time.Second}))
	a, b := rs[0], rs[1]
	var ms []*shMachine
	for i := range 4 {
		ms = append(ms, shEnroll(t, a, a.URL, fmt.Sprintf("agent-%d", i)))
	}
	shWaitAlive(t, b, ms)
	// Every notification A hears, to check below that none carries a
	// password: NOTIFY payloads are kept in PostgreSQL's queue, outside the
	// tables and the WAL that AssertNoSecret reads.
	var heardMu sync.Mutex
	var heard []string
	for _, channel := range []string{store.NotifyEvents, store.NotifyAgentCommands, store.NotifyAgentAcks, store.HostsChannel} {
		a.Store().OnNotify(channel, func(payload string) {
			heardMu.Lock()
			defer heardMu.Unlock()
			heard = append(heard, channel+" "+payload)
		})
	}
	var sent []string

	// B's own agent channel (what B's engine calls) sends and waits.
	ch := b.Service().GuestDriver(core.AgentGuestDriver)
	for i, m := range ms {
		pw := fmt.Sprintf("direct-%d-%s", i, testutil.NewPassword())
		sent = append(sent, pw)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := ch.SetPassword(ctx, driver.Ref{InstanceID: m.st.InstanceID, Address: m.st.AgentID}, "root", []byte(pw))
		cancel()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("agent %d: %v", i, err)
		}
		got, at := m.password()
		if got != pw {
			t.Fatalf("agent %d has another password", i)
		}
		if d := at[len(at)-1].Sub(start); d > 2*time.Second {
			t.Errorf("agent %d polling A got B's command after %s, want within 2s", i, d)
		}
		if took > 2*time.Second {
			t.Errorf("B heard agent %d's acknowledgement (sent to A) after %s, want within 2s", i, took)
		}
	}

	// And end to end: a reset accepted by B, executed by any replica.
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.st.InstanceID
	}
	pw := testutil.NewPassword()
	start := time.Now()
	op := b.Reset(b.Admin, apiv1.PasswordReset{InstanceIDs: ids, User: "root", Password: pw})
	for i, m := range ms {
		testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("agent %d's new password", i), func() bool {
			got, _ := m.password()
			return got == pw
		})
		if _, at := m.password(); at[len(at)-1].Sub(start) > 2*time.Second {
			t.Errorf("agent %d got the reset accepted by B after %s, want within 2s", i, at[len(at)-1].Sub(start))
		}
	}
	if done := b.Wait(b.Admin, op.ID); done.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s: %+v", done.Status, done)
	}
	a.AssertNoSecret(pw)
	heardMu.Lock()
	defer heardMu.Unlock()
	for name, ok := range map[string]func(float64) bool{
		"fleetpass_db_notifications_listening":      func(v float64) bool { return v == 1 },
		"fleetpass_db_notifications_received_total": func(v float64) bool { return v > 0 },
		"fleetpass_db_notifications_sent_total":     func(v float64) bool { return v > 0 },
		"fleetpass_db_notifications_failed_total":   func(v float64) bool { return v == 0 },
	} {
		if v := shMetric(t, b, name); !ok(v) {
			t.Errorf("B's %s = %g", name, v)
		}
	}
	if !slices.Contains(heard, store.NotifyAgentCommands+" "+ms[0].st.AgentID) {
		t.Fatalf("A heard no command wake-up for agent 0 among %d notifications", len(heard))
	}
	for _, n := range heard {
		for _, secret := range append(sent, pw) {
			if testutil.ContainsSecret([]byte(n), secret) {
				t.Fatalf("a notification on %s carries a password", strings.Fields(n)[0])
			}
		}
	}
}

// shEvent is one server-sent event.
type shEvent struct {
	id  int64
	typ string
	ev  apiv1.Event
}

// shFollow reads srv's event stream of operation opID from after, until
// stop says so or the stream ends.
func shFollow(t *testing.T, srv *servertest.Server, opID string, after int64, stop func(seen []shEvent) bool) []shEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events?operationId="+opID, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(srv.Admin.ID, srv.Admin.Secret)
	req.Header.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events: status %d", resp.StatusCode)
	}
	var seen []shEvent
	var cur shEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.id, _ = strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
		case strings.HasPrefix(line, "event: "):
			cur.typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.ev); err != nil {
				t.Fatal(err)
			}
		case line == "" && cur.id != 0:
			seen = append(seen, cur)
			cur = shEvent{}
			if stop(seen) {
				return seen
			}
		}
	}
	t.Fatalf("the stream on %s ended early after %d events: %v", srv.URL, len(seen), sc.Err())
	return nil
}

// An SSE client on C follows a batch accepted by A (its items executed by
// every replica), leaves mid-stream and resumes on B with Last-Event-ID:
// together the two streams hold exactly the operation's events in the
// database, in order, none missing and none twice.
func TestAnEventStreamResumedOnAnotherReplicaHasNoGapAndNoDuplicate(t *testing.T) {
	rs := shReplicas(t, 3)
	a, b, c := rs[0], rs[1], rs[2]
	var ms []*shMachine
	for i := range 12 {
		ms = append(ms, shEnroll(t, a, rs[i%3].URL, fmt.Sprintf("sse-%d", i)))
	}
	shWaitAlive(t, a, ms)
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.st.InstanceID
	}
	op := a.Reset(a.Admin, apiv1.PasswordReset{InstanceIDs: ids, User: "root", Generate: true})

	first := shFollow(t, c, op.ID, 0, func(seen []shEvent) bool { return len(seen) == 8 })
	last := first[len(first)-1].id
	ended := func(seen []shEvent) bool {
		e := seen[len(seen)-1].ev
		return e.Operation != nil && e.Operation.Status != apiv1.OperationRunning
	}
	var second []shEvent
	if !ended(first) {
		second = shFollow(t, b, op.ID, last, ended)
	}
	got := append(first, second...)

	if done := a.Wait(a.Admin, op.ID); done.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s: %+v", done.Status, done)
	}
	rows, err := a.Store().EventsAfter(context.Background(), 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, r := range rows {
		if r.Ref == op.ID && r.Type != "instance" {
			want = append(want, r.ID)
		}
	}
	var gotIDs []int64
	for _, e := range got {
		gotIDs = append(gotIDs, e.id)
	}
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("the streams on C then B gave events %v\nthe database holds %v", gotIDs, want)
	}
	if len(first) == 0 || len(second) == 0 {
		t.Logf("first stream %d events, second %d", len(first), len(second))
	}
}

// The same Idempotency-Key sent to A and B at once makes one operation:
// both answers name it.
func TestOneIdempotencyKeyOnTwoReplicasAtOnceMakesOneOperation(t *testing.T) {
	rs := shReplicas(t, 2)
	m := shEnroll(t, rs[0], rs[0].URL, "idem")
	shWaitAlive(t, rs[0], []*shMachine{m})
	for round := range 3 {
		key := fmt.Sprintf("idem-%d", round)
		body := apiv1.PasswordReset{InstanceIDs: []string{m.st.InstanceID}, User: "root", Password: "Idem-" + testutil.NewPassword()}
		var wg sync.WaitGroup
		replies := make([]servertest.Reply, 2)
		for i, r := range rs {
			wg.Go(func() { replies[i] = r.Do(r.Admin, "POST", "/v1/password-resets", body, "Idempotency-Key", key) })
		}
		wg.Wait()
		var opIDs []string
		for i, rep := range replies {
			if rep.Status != http.StatusAccepted && rep.Status != http.StatusOK {
				t.Fatalf("round %d, replica %d: status %d: %s", round, i, rep.Status, rep.Body)
			}
			var op apiv1.Operation
			if err := json.Unmarshal(rep.Body, &op); err != nil {
				t.Fatal(err)
			}
			opIDs = append(opIDs, op.ID)
		}
		if opIDs[0] != opIDs[1] {
			t.Fatalf("round %d: one idempotency key made operations %v", round, opIDs)
		}
		rs[1].Wait(rs[1].Admin, opIDs[0])
	}
	ops, err := rs[0].Store().ListOperations(context.Background(), store.OperationFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 {
		t.Fatalf("%d operations for three idempotency keys, want 3", len(ops))
	}
}

// Failed sign-ins count in the database: spread over two replicas they
// lock a name and address pair, and an address, at the limits one server
// has.
func TestFailedSignInsSpreadOverReplicasLockAtTheLimit(t *testing.T) {
	rs := shReplicas(t, 2)
	ctx := context.Background()
	signIn := func(i int, name, addr string) string {
		_, err := rs[i%2].Service().SignIn(ctx, name, []byte("wrong-password"), addr, "req")
		return core.CodeOf(err)
	}
	for i := range core.PairFailureLimit {
		if code := signIn(i, "admin", "198.51.100.1"); code != core.CodeSignInFailed {
			t.Fatalf("attempt %d: %s, want %s", i+1, code, core.CodeSignInFailed)
		}
	}
	for i := range 2 {
		if code := signIn(i, "admin", "198.51.100.1"); code != core.CodeSignInLocked {
			t.Fatalf("attempt past the pair limit on replica %d: %s, want %s", i, code, core.CodeSignInLocked)
		}
	}
	for i := range core.AddrFailureLimit {
		if code := signIn(i, fmt.Sprintf("user-%d", i), "198.51.100.2"); code != core.CodeSignInFailed {
			t.Fatalf("address attempt %d: %s, want %s", i+1, code, core.CodeSignInFailed)
		}
	}
	for i := range 2 {
		if code := signIn(i, "someone-else", "198.51.100.2"); code != core.CodeSignInLocked {
			t.Fatalf("attempt past the address limit on replica %d: %s, want %s", i, code, core.CodeSignInLocked)
		}
	}
}

// One key's burst spread over three replicas is cut at the burst, not
// three times it: the budget lives in the database.
func TestARateBurstOverThreeReplicasIsRefusedAtTheTotal(t *testing.T) {
	rs := shReplicas(t, 3, servertest.WithAPI(nativeapi.Config{RateLimit: 0.001, Burst: 10}))
	k := rs[0].NewKey("acme")
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			r := rs[i%3].Do(k, "GET", "/v1/instances", nil)
			mu.Lock()
			defer mu.Unlock()
			codes[r.Status]++
			if r.Status == http.StatusTooManyRequests && (r.ErrCode() != core.CodeRateLimited || r.Header.Get("Retry-After") == "") {
				t.Errorf("a refusal without its code or Retry-After: %s %v", r.Body, r.Header)
			}
		})
	}
	wg.Wait()
	if codes[http.StatusOK] != 10 || codes[http.StatusTooManyRequests] != 20 {
		t.Fatalf("answers %v, want 10 OK and 20 Too Many Requests", codes)
	}
}

// Budgets are per key, across replicas too: one key spending its burst
// over three replicas leaves another tenant's key, and another key of its
// own tenant, their whole bursts on every replica.
func TestOneKeysSpentBudgetLeavesOtherKeysTheirOwnAcrossReplicas(t *testing.T) {
	rs := shReplicas(t, 3, servertest.WithAPI(nativeapi.Config{RateLimit: 0.001, Burst: 3}))
	spender, sibling, other := rs[0].NewKey("acme"), rs[1].NewKey("acme"), rs[2].NewKey("globex")
	allowed := func(k servertest.Key) int {
		n := 0
		for i := range 9 {
			r := rs[i%3].Do(k, "GET", "/v1/instances", nil)
			switch r.Status {
			case http.StatusOK:
				n++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
		}
		return n
	}
	if n := allowed(spender); n != 3 {
		t.Fatalf("the spending key got %d of 9 requests over three replicas, want its burst of 3", n)
	}
	for name, k := range map[string]servertest.Key{"another tenant's key": other, "a key of the same tenant": sibling} {
		if n := allowed(k); n != 3 {
			t.Errorf("%s got %d of 9 requests after another key spent its budget, want its own burst of 3", name, n)
		}
	}
}

// The shared limiter fails open: a replica that cannot take a budget from
// the database lets the request through and counts it in
// fleetpass_rate_limiter_errors_total, rather than refuse every client
// over the limiter's own trouble.
func TestARateLimiterThatCannotReachItsTableLetsRequestsThroughAndCountsThem(t *testing.T) {
	rs := shReplicas(t, 1, servertest.WithAPI(nativeapi.Config{RateLimit: 0.001, Burst: 1}))
	srv := rs[0]
	k := srv.NewKey("acme")
	srv.MustDo(k, "GET", "/v1/instances", nil, http.StatusOK, nil)
	if r := srv.Do(k, "GET", "/v1/instances", nil); r.Status != http.StatusTooManyRequests {
		t.Fatalf("past the burst: status %d, want 429", r.Status)
	}
	// Everything else in the database still answers; the budgets do not.
	db := srv.Store().DB
	if _, err := db.Exec(`ALTER TABLE rate_limits RENAME TO rate_limits_away`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.Exec(`ALTER TABLE rate_limits_away RENAME TO rate_limits`) })
	for range 3 {
		srv.MustDo(k, "GET", "/v1/instances", nil, http.StatusOK, nil)
	}
	if n := shMetric(t, srv, "fleetpass_rate_limiter_errors_total"); n < 3 {
		t.Fatalf("fleetpass_rate_limiter_errors_total = %g, want at least the 3 requests let through", n)
	}
}

// shMetric reads one unlabelled (but for the replica) series of srv's
// /metrics.
func shMetric(t *testing.T, srv *servertest.Server, name string) float64 {
	t.Helper()
	body := srv.Do(servertest.Key{}, "GET", "/metrics", nil).Body
	m := regexp.MustCompile(`(?m)^` + name + `\{replica="[^"]*"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// shHost is the power and guest of machines on one libvirt host, as the
// engine sees them; it records how many are worked at once.
type shHost struct {
	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	sets        int
}

func (h *shHost) State(context.Context, driver.Ref) (driver.PowerState, error) {
	return driver.PowerRunning, nil
}
func (h *shHost) Shutdown(context.Context, driver.Ref) error { return nil }
func (h *shHost) Stop(context.Context, driver.Ref) error     { return nil }
func (h *shHost) Start(context.Context, driver.Ref) error    { return nil }
func (h *shHost) Ping(context.Context, driver.Ref) error     { return nil }

func (h *shHost) SetPassword(ctx context.Context, _ driver.Ref, _ string, _ []byte) error {
	h.mu.Lock()
	h.inFlight++
	h.maxInFlight = max(h.maxInFlight, h.inFlight)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.inFlight--
		h.sets++
		h.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}

// A libvirt host's max_concurrency bounds the work of every replica
// together: two replicas never work more of its machines at once than the
// host allows, and items waiting for a slot still all succeed.
func TestAHostsConcurrencyLimitHoldsAcrossReplicas(t *testing.T) {
	h := &shHost{}
	rs := shReplicas(t, 2, servertest.WithDrivers(map[string]driver.Power{core.LibvirtDriver: h},
		map[string]driver.Guest{core.LibvirtDriver: h}))
	ctx := context.Background()
	st := rs[0].Store()
	// The host's row only: no replica connects to it, the test's driver
	// stands for its machines.
	if err := st.InTx(ctx, func(tx *sql.Tx) error {
		return st.CreateHost(ctx, tx, &apiv1.Host{ID: "hst-slots", Tenant: "acme", Name: "slots", Driver: core.LibvirtDriver,
			URI: "qemu+tcp://192.0.2.1/system", MaxConcurrency: 2})
	}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 6 {
		link := apiv1.DriverLink{Driver: core.LibvirtDriver, Host: "hst-slots", Address: fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i)}
		in := apiv1.Instance{ID: core.NewID("ins", 10), Tenant: "acme", Name: fmt.Sprintf("vm-%d", i), OSType: "linux",
			AdminUser: "root", State: apiv1.StateRunning, Power: link, Guest: link}
		if err := st.InTx(ctx, func(tx *sql.Tx) error { return st.CreateInstance(ctx, tx, &in) }); err != nil {
			t.Fatal(err)
		}
		alive := true
		if err := rs[0].Service().SetInstanceObserved(ctx, in.ID, apiv1.StateRunning, &alive); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.ID)
	}
	k := rs[0].NewKey("acme")
	op := rs[0].Reset(k, apiv1.PasswordReset{InstanceIDs: ids, User: "root", Generate: true})
	if done := rs[1].Wait(k, op.ID); done.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s: %+v", done.Status, done)
	}
	h.mu.Lock()
	most, sets := h.maxInFlight, h.sets
	h.mu.Unlock()
	if most > 2 {
		t.Fatalf("%d machines of a host bounded at 2 were worked at once", most)
	}
	if sets < 6 {
		t.Fatalf("%d passwords set, want 6", sets)
	}
	// Each execution frees its slot right after the item's end.
	testutil.WaitFor(t, 10*time.Second, "the host's slots freed", func() bool {
		n, err := st.HostSlotsHeld(ctx, core.LibvirtDriver+"/hst-slots")
		return err == nil && n == 0
	})
}

// Agents behind a load balancer whose replica dies reconnect to another
// one, and the next reset reaches them: their commands and liveness are
// rows, not the dead replica's memory.
func TestAgentsOfAKilledReplicaReconnectToAnotherAndTheNextResetWorks(t *testing.T) {
	rs := shReplicas(t, 2)
	a, b := rs[0], rs[1]
	lb, front := servertest.NewBalancer(t, a.URL)
	var ms []*shMachine
	var ids []string
	for i := range 3 {
		m := shEnroll(t, a, front, fmt.Sprintf("lb-%d", i))
		ms, ids = append(ms, m), append(ids, m.st.InstanceID)
	}
	shWaitAlive(t, b, ms)
	reset := func(what string) {
		t.Helper()
		pw := testutil.NewPassword()
		op := b.Reset(b.Admin, apiv1.PasswordReset{InstanceIDs: ids, User: "root", Password: pw})
		if done := b.Wait(b.Admin, op.ID); done.Status != apiv1.OperationSucceeded {
			t.Fatalf("%s: operation %s: %+v", what, done.Status, done)
		}
		for i, m := range ms {
			if got, _ := m.password(); got != pw {
				t.Fatalf("%s: agent %d has another password", what, i)
			}
		}
	}
	reset("with every agent on A")
	lb.Point(b.URL)
	a.Stop()
	// A's end may have marked the agents gone; they are alive again once
	// their next poll reached B.
	shWaitAlive(t, b, ms)
	reset("after A was killed")
}

// A signed action-API request replayed to another replica (behind one
// balancer, so one Host) gets the first answer again and runs nothing
// twice: the replay record is a row both replicas read.
func TestAnIdenticalSignedRequestToAnotherReplicaRunsOnce(t *testing.T) {
	rs := shReplicas(t, 2)
	m := shEnroll(t, rs[0], rs[0].URL, "replay")
	shWaitAlive(t, rs[0], []*shMachine{m})
	k := rs[0].NewKey("acme")
	body := `{"instanceIds": ["` + m.st.InstanceID + `"]}`
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	const host = "fleetpass.example"
	send := func(srv *servertest.Server) reply {
		req, err := http.NewRequest("POST", srv.URL+"/api/v2/zec", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-ZC-Action", "RebootInstances")
		req.Header.Set("X-ZC-Version", "2022-11-20")
		req.Header.Set("X-ZC-Timestamp", ts)
		req.Header.Set("X-ZC-Signature-Method", "ZC2-HMAC-SHA256")
		req.Header.Set("Authorization", testZC2Authorization(k.ID, k.Secret, ts, "application/json", host, []byte(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return reply{status: resp.StatusCode, header: resp.Header, body: data}
	}
	first := actionOK(t, send(rs[0]))
	again := actionOK(t, send(rs[1]))
	if first["operationId"] == nil || again["operationId"] != first["operationId"] {
		t.Fatalf("the repeat on another replica answered %v, the first %v", again, first)
	}
	ops, err := rs[1].Store().ListOperations(context.Background(), store.OperationFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 {
		t.Fatalf("%d operations for one signed request sent to two replicas, want 1", len(ops))
	}
}

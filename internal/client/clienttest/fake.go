// Package clienttest provides an in-memory fake of fleetpass's native API
// for the tests of the client and the CLI. It follows the wire contract
// (auth, error bodies, 202 + Location, /wait, Server-Sent Events with
// Last-Event-ID, Idempotency-Key) but none of the real server's rules beyond
// what those tests need; operations walk through their steps on a timer.
//
// Tests reach it only through its URL and credentials, so they can later
// run against the real server instead.
package clienttest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// Key id and secret the fake accepts by default.
const (
	KeyID  = "key-test"
	Secret = "s3cret-test"
)

// Fake is a running fake API server.
type Fake struct {
	srv *httptest.Server

	mu sync.Mutex
	// stepDelay is the pause between two steps of an operation.
	stepDelay time.Duration
	// startDelay is the pause before an accepted operation starts moving,
	// so a client has time to subscribe to its events.
	startDelay time.Duration
	noEvents   bool
	keys       map[string]string // id -> secret
	keyList    []apiv1.Key
	instances  []*apiv1.Instance
	ops        []*apiv1.Operation
	tenants    []apiv1.Tenant
	audit      []apiv1.AuditEntry
	events     []apiv1.Event
	changed    chan struct{} // closed and replaced on every change
	failures   map[string]fakeFailure
	idem       map[string][]byte
	passwords  [][]byte
	requests   []string
	nextReq    int
	nextOp     int
	now        func() time.Time
}

type fakeFailure struct{ code, message string }

// New starts a fake; it is closed when the test ends.
func New(t interface {
	Cleanup(func())
	Helper()
}) *Fake {
	t.Helper()
	f := &Fake{
		stepDelay:  5 * time.Millisecond,
		startDelay: 50 * time.Millisecond,
		keys:       map[string]string{KeyID: Secret},
		changed:    make(chan struct{}),
		failures:   map[string]fakeFailure{},
		idem:       map[string][]byte{},
		now:        func() time.Time { return time.Now().UTC().Truncate(time.Second) },
	}
	f.keyList = []apiv1.Key{{ID: KeyID, Tenant: "default", Name: "admin", Admin: true, CreatedAt: f.now()}}
	f.tenants = []apiv1.Tenant{{ID: "default", Name: "default", CreatedAt: f.now()}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// URL is the fake's base URL.
func (f *Fake) URL() string { return f.srv.URL }

// Close stops the fake.
func (f *Fake) Close() {
	f.srv.CloseClientConnections()
	f.srv.Close()
}

// SetTiming sets the pause before an accepted operation starts moving
// (time for a client to subscribe to its events) and between its steps.
func (f *Fake) SetTiming(start, step time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startDelay, f.stepDelay = start, step
}

// DisableEvents makes /v1/events answer 404, as a server without events
// (or a proxy that cuts them) would.
func (f *Fake) DisableEvents() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noEvents = true
}

// AddInstance registers an instance with the given id, name and state
// (RUNNING if empty), OS linux.
func (f *Fake) AddInstance(id, name, state string) {
	if state == "" {
		state = apiv1.StateRunning
	}
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances = append(f.instances, &apiv1.Instance{
		ID: id, Name: name, Tenant: "default", OSType: "linux", AdminUser: "root",
		State: state, GuestAlive: true, CreatedAt: now, UpdatedAt: now,
		Power: apiv1.DriverLink{Driver: "sim", Address: id},
		Guest: apiv1.DriverLink{Driver: "sim", Address: id},
	})
}

// FailInstance makes the items of instance id fail with code and message.
func (f *Fake) FailInstance(id, code, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[id] = fakeFailure{code, message}
}

// Passwords returns copies of the passwords the fake received, in order.
func (f *Fake) Passwords() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.passwords {
		out = append(out, string(p))
	}
	return out
}

// Requests returns "METHOD /path" of every request received.
func (f *Fake) Requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// Operation returns a copy of an operation as the fake holds it.
func (f *Fake) Operation(id string) (apiv1.Operation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, op := range f.ops {
		if op.ID == id {
			return cloneOp(op), true
		}
	}
	return apiv1.Operation{}, false
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.nextReq++
	reqID := fmt.Sprintf("req-%d", f.nextReq)
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	w.Header().Set("X-Request-Id", reqID)

	if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	if !f.authorized(r) {
		writeError(w, reqID, http.StatusUnauthorized, "UNAUTHENTICATED", "missing or invalid API key", nil)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	route := r.Method + " " + strings.Join(routeShape(parts), "/")
	switch route {
	case "GET v1/instances":
		f.listInstances(w, r)
	case "POST v1/instances":
		f.createInstance(w, r, reqID)
	case "GET v1/instances/*":
		f.getInstance(w, reqID, parts[2])
	case "DELETE v1/instances/*":
		f.deleteInstance(w, reqID, parts[2])
	case "POST v1/password-resets", "POST v1/power-actions":
		f.idempotent(w, r, reqID, f.startOperation)
	case "GET v1/operations":
		f.listOperations(w, r)
	case "GET v1/operations/*":
		f.getOperation(w, reqID, parts[2])
	case "GET v1/operations/*/wait":
		f.waitOperation(w, r, reqID, parts[2])
	case "GET v1/events":
		f.mu.Lock()
		off := f.noEvents
		f.mu.Unlock()
		if off {
			writeError(w, reqID, http.StatusNotFound, "NOT_FOUND", "no such endpoint", nil)
			return
		}
		f.streamEvents(w, r)
	case "GET v1/keys":
		f.mu.Lock()
		writeJSON(w, http.StatusOK, apiv1.KeyList{Keys: slices.Clone(f.keyList)})
		f.mu.Unlock()
	case "POST v1/keys":
		f.createKey(w, r, reqID)
	case "DELETE v1/keys/*":
		f.revokeKey(w, reqID, parts[2])
	case "GET v1/tenants":
		f.mu.Lock()
		writeJSON(w, http.StatusOK, apiv1.TenantList{Tenants: slices.Clone(f.tenants)})
		f.mu.Unlock()
	case "POST v1/tenants":
		f.createTenant(w, r, reqID)
	case "GET v1/audit":
		f.listAudit(w, r)
	default:
		writeError(w, reqID, http.StatusNotFound, "NOT_FOUND", "no such endpoint", nil)
	}
}

// routeShape replaces path ids by * so routes can be matched by a switch.
func routeShape(parts []string) []string {
	out := slices.Clone(parts)
	if len(out) >= 3 && out[0] == "v1" {
		out[2] = "*"
	}
	return out
}

func (f *Fake) authorized(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if !ok {
		tok, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !found {
			return false
		}
		id, secret, ok = strings.Cut(tok, ":")
		if !ok {
			return false
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want, found := f.keys[id]
	return found && want == secret
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, reqID string, status int, code, msg string, details map[string]any) {
	writeJSON(w, status, apiv1.ErrorBody{Error: apiv1.Error{Code: code, Message: msg, RequestID: reqID, Details: details}})
}

func decode(w http.ResponseWriter, r *http.Request, reqID string, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, reqID, http.StatusBadRequest, "INVALID_PARAMETER", "request body is not valid JSON", nil)
		return false
	}
	return true
}

// page cuts items by the limit and cursor (an offset) of r.
func page[T any](r *http.Request, items []T) ([]T, string) {
	start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		limit = 50
	}
	start = min(start, len(items))
	end := min(start+limit, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next
}

func (f *Fake) listInstances(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	var all []apiv1.Instance
	for _, in := range f.instances {
		if (q.Get("state") == "" || in.State == q.Get("state")) &&
			(q.Get("os") == "" || in.OSType == q.Get("os")) &&
			(q.Get("tenant") == "" || in.Tenant == q.Get("tenant")) &&
			strings.HasPrefix(in.Name, q.Get("namePrefix")) {
			all = append(all, *in)
		}
	}
	f.mu.Unlock()
	items, next := page(r, all)
	writeJSON(w, http.StatusOK, apiv1.InstanceList{Instances: items, NextCursor: next})
}

func (f *Fake) createInstance(w http.ResponseWriter, r *http.Request, reqID string) {
	var in apiv1.InstanceCreate
	if !decode(w, r, reqID, &in) {
		return
	}
	id := "ins-" + randomHex(4)
	f.AddInstance(id, in.Name, apiv1.StateStopped)
	f.mu.Lock()
	inst := *f.instances[len(f.instances)-1]
	f.mu.Unlock()
	writeJSON(w, http.StatusCreated, inst)
}

func (f *Fake) findInstance(id string) *apiv1.Instance {
	for _, in := range f.instances {
		if in.ID == id {
			return in
		}
	}
	return nil
}

func (f *Fake) getInstance(w http.ResponseWriter, reqID, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.findInstance(id)
	if in == nil {
		writeError(w, reqID, http.StatusNotFound, "INSTANCE_NOT_FOUND", "instance "+id+" not found", nil)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (f *Fake) deleteInstance(w http.ResponseWriter, reqID, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.instances, func(in *apiv1.Instance) bool { return in.ID == id })
	if i < 0 {
		writeError(w, reqID, http.StatusNotFound, "INSTANCE_NOT_FOUND", "instance "+id+" not found", nil)
		return
	}
	f.instances = slices.Delete(f.instances, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}

// idempotent replays the first answer to a repeated Idempotency-Key.
func (f *Fake) idempotent(w http.ResponseWriter, r *http.Request, reqID string,
	h func(http.ResponseWriter, *http.Request, string)) {
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		f.mu.Lock()
		saved, ok := f.idem[key]
		f.mu.Unlock()
		if ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write(saved)
			return
		}
	}
	rec := httptest.NewRecorder()
	h(rec, r, reqID)
	if key != "" && rec.Code == http.StatusAccepted {
		f.mu.Lock()
		f.idem[key] = rec.Body.Bytes()
		f.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (f *Fake) startOperation(w http.ResponseWriter, r *http.Request, reqID string) {
	var (
		ids       []string
		kind      string
		generated string
		user      string
		mode      string
	)
	if strings.HasSuffix(r.URL.Path, "/password-resets") {
		var req apiv1.PasswordReset
		if !decode(w, r, reqID, &req) {
			return
		}
		if (req.Password == "") == !req.Generate {
			writeError(w, reqID, http.StatusBadRequest, "INVALID_PARAMETER", "give exactly one of password and generate", nil)
			return
		}
		if req.Password != "" {
			f.mu.Lock()
			f.passwords = append(f.passwords, []byte(req.Password))
			f.mu.Unlock()
		} else {
			generated = "Gen-" + randomHex(6) + "!"
		}
		ids, kind, user, mode = req.InstanceIDs, apiv1.KindResetPassword, req.User, req.Mode
	} else {
		var req apiv1.PowerAction
		if !decode(w, r, reqID, &req) {
			return
		}
		ids, kind = req.InstanceIDs, req.Action
	}
	if len(ids) == 0 {
		writeError(w, reqID, http.StatusBadRequest, "INVALID_PARAMETER", "instanceIds is empty", nil)
		return
	}
	f.mu.Lock()
	var missing []any
	op := &apiv1.Operation{Kind: kind, Tenant: "default", Status: apiv1.OperationRunning,
		RequestedBy: apiv1.Requester{Kind: "key", ID: KeyID, Address: r.RemoteAddr}, CreatedAt: f.now()}
	for _, id := range ids {
		in := f.findInstance(id)
		if in == nil {
			missing = append(missing, id)
			continue
		}
		if user == "" {
			user = in.AdminUser
		}
		op.Items = append(op.Items, apiv1.Item{InstanceID: id, InstanceName: in.Name, State: apiv1.ItemPending,
			Step: apiv1.StepQueued, User: user, Mode: mode})
	}
	if len(missing) > 0 {
		f.mu.Unlock()
		writeError(w, reqID, http.StatusNotFound, "INVALID_INSTANCE_NOT_FOUND", "unknown instances",
			map[string]any{"instanceIds": missing})
		return
	}
	f.nextOp++
	op.ID = fmt.Sprintf("op-%d", f.nextOp)
	op.Summary = summarize(op.Items)
	f.ops = append(f.ops, op)
	answer := cloneOp(op)
	f.mu.Unlock()
	answer.GeneratedPassword = generated

	go f.run(op.ID)
	w.Header().Set("Location", "/v1/operations/"+op.ID)
	writeJSON(w, http.StatusAccepted, answer)
}

// run walks an operation's items through their steps, publishing events.
func (f *Fake) run(id string) {
	f.mu.Lock()
	start, stepDelay := f.startDelay, f.stepDelay
	f.mu.Unlock()
	time.Sleep(start)
	f.mu.Lock()
	op := f.findOp(id)
	steps := []string{apiv1.StepApplying, apiv1.StepDone}
	if op.Kind == apiv1.KindResetPassword {
		steps = []string{apiv1.StepShuttingDown, apiv1.StepStopped, apiv1.StepStaging, apiv1.StepStarting,
			apiv1.StepWaitingGuest, apiv1.StepApplying, apiv1.StepDone}
	}
	f.mu.Unlock()
	for _, step := range steps {
		f.mu.Lock()
		for i := range op.Items {
			it := &op.Items[i]
			if it.State == apiv1.ItemFailed || it.State == apiv1.ItemSucceeded {
				continue
			}
			fail, failing := f.failures[it.InstanceID]
			switch {
			case step == apiv1.StepApplying && failing:
				it.State, it.Step, it.ErrorCode, it.Message = apiv1.ItemFailed, step, fail.code, fail.message
			case step == apiv1.StepDone:
				it.State, it.Step = apiv1.ItemSucceeded, step
			default:
				it.State, it.Step = apiv1.ItemRunning, step
			}
			item := apiv1.ItemEvent{OperationID: op.ID, Item: *it}
			f.publishLocked(apiv1.Event{Type: "item", Item: &item})
		}
		op.Summary = summarize(op.Items)
		f.mu.Unlock()
		time.Sleep(stepDelay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	finished := f.now()
	op.FinishedAt = &finished
	switch s := op.Summary; {
	case s.Failed == 0:
		op.Status = apiv1.OperationSucceeded
	case s.Succeeded == 0:
		op.Status = apiv1.OperationFailed
	default:
		op.Status = apiv1.OperationPartial
	}
	// Like the real server, operation events leave the items out.
	final := cloneOp(op)
	final.Items = nil
	f.publishLocked(apiv1.Event{Type: "operation", Operation: &final})
}

func summarize(items []apiv1.Item) apiv1.Summary {
	s := apiv1.Summary{Total: len(items)}
	for _, it := range items {
		switch it.State {
		case apiv1.ItemPending:
			s.Pending++
		case apiv1.ItemRunning:
			s.Running++
		case apiv1.ItemSucceeded:
			s.Succeeded++
		case apiv1.ItemFailed:
			s.Failed++
		}
	}
	return s
}

func cloneOp(op *apiv1.Operation) apiv1.Operation {
	c := *op
	c.Items = slices.Clone(op.Items)
	return c
}

func (f *Fake) publishLocked(ev apiv1.Event) {
	ev.ID = int64(len(f.events) + 1)
	ev.Time = f.now()
	f.events = append(f.events, ev)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Fake) findOp(id string) *apiv1.Operation {
	for _, op := range f.ops {
		if op.ID == id {
			return op
		}
	}
	return nil
}

func (f *Fake) listOperations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	var all []apiv1.Operation
	for i := len(f.ops) - 1; i >= 0; i-- {
		op := f.ops[i]
		if q.Get("status") != "" && op.Status != q.Get("status") {
			continue
		}
		if id := q.Get("instanceId"); id != "" &&
			!slices.ContainsFunc(op.Items, func(it apiv1.Item) bool { return it.InstanceID == id }) {
			continue
		}
		all = append(all, cloneOp(op))
	}
	f.mu.Unlock()
	items, next := page(r, all)
	writeJSON(w, http.StatusOK, apiv1.OperationList{Operations: items, NextCursor: next})
}

func (f *Fake) getOperation(w http.ResponseWriter, reqID, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	op := f.findOp(id)
	if op == nil {
		writeError(w, reqID, http.StatusNotFound, "OPERATION_NOT_FOUND", "operation "+id+" not found", nil)
		return
	}
	writeJSON(w, http.StatusOK, cloneOp(op))
}

func (f *Fake) waitOperation(w http.ResponseWriter, r *http.Request, reqID, id string) {
	timeout, err := time.ParseDuration(r.URL.Query().Get("timeout"))
	if err != nil {
		timeout = 30 * time.Second
	}
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		op := f.findOp(id)
		if op == nil {
			f.mu.Unlock()
			writeError(w, reqID, http.StatusNotFound, "OPERATION_NOT_FOUND", "operation "+id+" not found", nil)
			return
		}
		snapshot, changed := cloneOp(op), f.changed
		f.mu.Unlock()
		if snapshot.Status != apiv1.OperationRunning {
			writeJSON(w, http.StatusOK, snapshot)
			return
		}
		select {
		case <-changed:
		case <-deadline:
			writeJSON(w, http.StatusOK, snapshot)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (f *Fake) streamEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "no flusher", http.StatusInternalServerError)
		return
	}
	next, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
	opID := r.URL.Query().Get("operationId")
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": hello\n\n")
	fl.Flush()
	if next == 0 {
		// Like the real server: a new subscriber gets events from now on.
		f.mu.Lock()
		next = len(f.events)
		f.mu.Unlock()
	}
	for {
		f.mu.Lock()
		pending, changed := slices.Clone(f.events[next:]), f.changed
		f.mu.Unlock()
		for _, ev := range pending {
			next = int(ev.ID)
			if opID != "" && !eventOf(ev, opID) {
				continue
			}
			data, _ := json.Marshal(ev)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, data)
		}
		fl.Flush()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

func eventOf(ev apiv1.Event, opID string) bool {
	switch {
	case ev.Item != nil:
		return ev.Item.OperationID == opID
	case ev.Operation != nil:
		return ev.Operation.ID == opID
	}
	return false
}

func (f *Fake) createKey(w http.ResponseWriter, r *http.Request, reqID string) {
	var in apiv1.KeyCreate
	if !decode(w, r, reqID, &in) {
		return
	}
	tenant := in.Tenant
	if tenant == "" {
		tenant = "default"
	}
	k := apiv1.KeyCreated{Key: apiv1.Key{ID: "key-" + randomHex(4), Tenant: tenant, Name: in.Name, CreatedAt: f.now()},
		Secret: randomHex(16)}
	f.mu.Lock()
	f.keys[k.ID] = k.Secret
	f.keyList = append(f.keyList, k.Key)
	f.audit = append(f.audit, apiv1.AuditEntry{ID: int64(len(f.audit) + 1), Time: f.now(), Tenant: tenant,
		Actor: apiv1.Requester{Kind: "key", ID: KeyID}, Action: "key.create", Target: k.ID, RequestID: reqID})
	f.mu.Unlock()
	writeJSON(w, http.StatusCreated, k)
}

func (f *Fake) revokeKey(w http.ResponseWriter, reqID, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.keyList, func(k apiv1.Key) bool { return k.ID == id })
	if i < 0 {
		writeError(w, reqID, http.StatusNotFound, "KEY_NOT_FOUND", "key "+id+" not found", nil)
		return
	}
	now := f.now()
	f.keyList[i].RevokedAt = &now
	delete(f.keys, id)
	w.WriteHeader(http.StatusNoContent)
}

func (f *Fake) createTenant(w http.ResponseWriter, r *http.Request, reqID string) {
	var in apiv1.TenantCreate
	if !decode(w, r, reqID, &in) {
		return
	}
	t := apiv1.Tenant{ID: "ten-" + randomHex(4), Name: in.Name, CreatedAt: f.now()}
	f.mu.Lock()
	f.tenants = append(f.tenants, t)
	f.mu.Unlock()
	writeJSON(w, http.StatusCreated, t)
}

func (f *Fake) listAudit(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	all := slices.Clone(f.audit)
	f.mu.Unlock()
	slices.Reverse(all)
	items, next := page(r, all)
	writeJSON(w, http.StatusOK, apiv1.AuditList{Entries: items, NextCursor: next})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

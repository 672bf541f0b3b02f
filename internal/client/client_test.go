package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// TestMain stops the throwaway PostgreSQL cluster of a run on PostgreSQL
// (servertest.DatabaseURL).
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// newTestClient returns a client of url whose retry pauses are recorded
// instead of slept.
func newTestClient(t *testing.T, url string, opts ...Option) (*Client, *[]time.Duration) {
	t.Helper()
	c, err := New(url, "key-1", "secret-1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var slept []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		slept = append(slept, d)
		mu.Unlock()
		return ctx.Err()
	}
	return c, &slept
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://u:p@host/"} {
		if _, err := New(u, "k", "s"); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}

func TestAuthAndAPIError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != "key-1" || secret != "secret-1" {
			t.Errorf("basic auth = %q %q %v", id, secret, ok)
		}
		if strings.Contains(r.URL.String(), "secret") {
			t.Errorf("secret in URL %s", r.URL)
		}
		w.Header().Set("X-Request-Id", "req-hdr")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":{"code":"INSTANCE_NOT_FOUND","message":"no ins-x","requestId":"req-body","details":{"id":"ins-x"}}}`)
	}))
	defer srv.Close()
	c, slept := newTestClient(t, srv.URL)
	_, err := c.GetInstance(t.Context(), "ins-x")
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Status != 404 || ae.Code != "INSTANCE_NOT_FOUND" || ae.Message != "no ins-x" ||
		ae.RequestID != "req-body" || ae.Details["id"] != "ins-x" {
		t.Errorf("APIError = %+v", ae)
	}
	if !IsCode(err, "INSTANCE_NOT_FOUND") || !IsStatus(err, 404) {
		t.Error("IsCode/IsStatus disagree")
	}
	if got := err.Error(); !strings.Contains(got, "INSTANCE_NOT_FOUND") || !strings.Contains(got, "req-body") {
		t.Errorf("Error() = %q", got)
	}
	if len(*slept) != 0 {
		t.Errorf("a 404 was retried: %v", *slept)
	}
}

func TestNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-7")
		http.Error(w, "bad gateway from proxy", http.StatusBadGateway)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL)
	_, err := c.ListTenants(t.Context())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 502 || ae.RequestID != "req-7" || !strings.Contains(ae.Message, "bad gateway") {
		t.Fatalf("err = %#v", err)
	}
}

func TestRetryHonoursRetryAfterAndKeepsIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"action":"stop"`) {
			t.Errorf("attempt %d body = %s", n, body)
		}
		switch n {
		case 1:
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":"RATE_LIMITED","message":"slow down"}}`)
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.Header().Set("Location", "/v1/operations/op-9")
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"status":"running"}`)
		}
	}))
	defer srv.Close()
	c, slept := newTestClient(t, srv.URL)
	op, err := c.PowerAction(t.Context(), apiv1.PowerAction{Action: "stop", InstanceIDs: []string{"ins-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if op.ID != "op-9" {
		t.Errorf("op id from Location = %q", op.ID)
	}
	if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Errorf("idempotency keys = %q, want one key reused", keys)
	}
	if len(*slept) != 2 || (*slept)[0] != 3*time.Second {
		t.Errorf("pauses = %v, want Retry-After 3s first", *slept)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL, WithRetries(3, time.Minute))
	_, err := c.ListKeys(t.Context())
	if !IsStatus(err, 503) || calls != 3 {
		t.Fatalf("err = %v after %d calls, want 503 after 3", err, calls)
	}
}

func TestRetryAfterTooLongIsNotWaited(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL)
	_, err := c.ListKeys(t.Context())
	var ae *APIError
	if !errors.As(err, &ae) || ae.RetryAfter != time.Hour || calls != 1 {
		t.Fatalf("err = %v, calls %d", err, calls)
	}
}

func TestConnectionErrorRetriesPOSTWithSameKey(t *testing.T) {
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if len(keys) == 1 {
			// Drop the connection without an answer, as a crash would.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"ten-1","name":"acme"}`)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL)
	ten, err := c.CreateTenant(t.Context(), apiv1.TenantCreate{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if ten.ID != "ten-1" || len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Errorf("tenant %+v, keys %q", ten, keys)
	}
}

func TestEncodeWithPassword(t *testing.T) {
	for _, pw := range []string{"Abc12345!", `qu"ote\back`, "tab\tand\x01ctl", "ünïcødé-Pässwörd1"} {
		body, err := encodeWithPassword(apiv1.PasswordReset{InstanceIDs: []string{"ins-1"}, User: "root", Mode: "auto"}, []byte(pw))
		if err != nil {
			t.Fatal(err)
		}
		var got apiv1.PasswordReset
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", pw, body, err)
		}
		if got.Password != pw || got.User != "root" || got.Mode != "auto" || len(got.InstanceIDs) != 1 {
			t.Errorf("round trip of %q = %+v", pw, got)
		}
	}
	if _, err := encodeWithPassword(apiv1.PasswordReset{}, []byte{0xff, 'a'}); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
	body, err := encodeWithPassword(apiv1.PasswordReset{Generate: true, InstanceIDs: []string{"i"}}, nil)
	if err != nil || strings.Contains(string(body), "password") {
		t.Errorf("generate body = %s, %v", body, err)
	}
}

func TestResetPasswordSecretLeavesCallerBuffer(t *testing.T) {
	s := servertest.Start(t)
	in := s.AddMachine(servertest.Machine{Name: "web-1", Running: true})
	c, err := New(s.URL, s.Admin.ID, s.Admin.Secret)
	if err != nil {
		t.Fatal(err)
	}
	pw := []byte("Corr3ct-Horse!")
	op, err := c.ResetPasswordSecret(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID}}, pw)
	if err != nil {
		t.Fatal(err)
	}
	if string(pw) != "Corr3ct-Horse!" {
		t.Error("the client changed the caller's buffer")
	}
	done, err := c.WaitOperation(t.Context(), op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != apiv1.OperationSucceeded || done.Summary.Succeeded != 1 {
		t.Errorf("final operation %+v", done)
	}
	if !s.CheckPassword(in, "root", "Corr3ct-Horse!") {
		t.Error("the machine's password is not the one sent")
	}
}

func TestEventsReconnectWithLastEventID(t *testing.T) {
	var mu sync.Mutex
	var lastIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("operationId") != "op-1" {
			t.Errorf("query = %s", r.URL.RawQuery)
		}
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		n := len(lastIDs)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		switch n {
		case 1:
			fmt.Fprint(w, ": keep-alive\n\nid: 1\nevent: item\ndata: {\"item\":{\"operationId\":\"op-1\",\"instanceId\":\"ins-1\",\"step\":\"stopped\"}}\n\n")
			fmt.Fprint(w, "retry: 10\nid: 2\nevent: item\ndata: {\"type\":\"item\",\ndata: \"item\":{\"operationId\":\"op-1\",\"instanceId\":\"ins-2\"}}\n\n")
		case 2:
			fmt.Fprint(w, "id: 3\nevent: operation\ndata: {\"operation\":{\"id\":\"op-1\",\"status\":\"succeeded\"}}\n\n")
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	c, slept := newTestClient(t, srv.URL)
	var got []string
	var interruptions int
	for ev, err := range c.Events(t.Context(), EventFilter{OperationID: "op-1"}) {
		if err != nil {
			if errors.Is(err, ErrStreamInterrupted) {
				interruptions++
				continue
			}
			got = append(got, "fatal")
			break
		}
		got = append(got, fmt.Sprintf("%d/%s", ev.ID, ev.Type))
		if ev.Operation != nil && ev.Operation.Status == apiv1.OperationSucceeded {
			break
		}
	}
	want := "1/item 2/item 3/operation"
	if strings.Join(got, " ") != want {
		t.Errorf("events = %v, want %s", got, want)
	}
	if len(lastIDs) != 2 || lastIDs[0] != "" || lastIDs[1] != "2" {
		t.Errorf("Last-Event-ID headers = %q", lastIDs)
	}
	if interruptions != 1 || len(*slept) != 1 || (*slept)[0] != 10*time.Millisecond {
		t.Errorf("interruptions %d, pauses %v (want the server's retry: 10ms)", interruptions, *slept)
	}
}

func TestEventsFatalError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":{"code":"FORBIDDEN","message":"no"}}`)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL)
	n := 0
	for _, err := range c.Events(t.Context(), EventFilter{}) {
		n++
		if !IsCode(err, "FORBIDDEN") {
			t.Errorf("err = %v", err)
		}
	}
	if n != 1 {
		t.Errorf("got %d yields, want 1", n)
	}
}

func TestEventsFollowAnOperationOnTheRealServer(t *testing.T) {
	s := servertest.Start(t)
	in := s.AddMachine(servertest.Machine{Name: "web-1", Running: true, Faults: sim.Faults{AgentDead: true}})
	c, err := New(s.URL, s.Admin.ID, s.Admin.Secret)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	op, err := c.ResetPassword(ctx, apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOnline, Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	if op.GeneratedPassword == "" {
		t.Error("no generated password in the answer")
	}
	var last *apiv1.ItemEvent
	for ev, err := range c.Events(ctx, EventFilter{OperationID: op.ID}) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Item != nil {
			last = ev.Item
		}
		if ev.Operation != nil && OperationDone(ev.Operation) {
			if ev.Operation.Status != apiv1.OperationFailed {
				t.Errorf("status %s", ev.Operation.Status)
			}
			break
		}
	}
	if last == nil || last.State != apiv1.ItemFailed || last.ErrorCode != core.CodeGuestNotAlive {
		t.Errorf("last item event %+v, want failed with %s", last, core.CodeGuestNotAlive)
	}
}

func TestWaitOperationLoops(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.URL.Path != "/v1/operations/op-1/wait" || r.URL.Query().Get("timeout") != "30s" {
			t.Errorf("request %s", r.URL)
		}
		status := "running"
		if calls == 3 {
			status = "partial"
		}
		fmt.Fprintf(w, `{"id":"op-1","status":%q}`, status)
	}))
	defer srv.Close()
	c, _ := newTestClient(t, srv.URL)
	op, err := c.WaitOperation(t.Context(), "op-1")
	if err != nil || op.Status != "partial" || calls != 3 {
		t.Fatalf("op %+v err %v calls %d", op, err, calls)
	}
}

func TestPinnedCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"tenants":[]}`)
	}))
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	good := hex.EncodeToString(sum[:])

	c, _ := newTestClient(t, srv.URL, WithPinnedCertificate("SHA256:"+strings.ToUpper(good)))
	if _, err := c.ListTenants(t.Context()); err != nil {
		t.Fatalf("pinned fingerprint refused: %v", err)
	}

	sum[0] ^= 1
	c, _ = newTestClient(t, srv.URL, WithPinnedCertificate(hex.EncodeToString(sum[:])), WithRetries(1, 0))
	if _, err := c.ListTenants(t.Context()); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong fingerprint: err = %v", err)
	}

	c, _ = newTestClient(t, srv.URL, WithRetries(1, 0))
	if _, err := c.ListTenants(t.Context()); err == nil {
		t.Fatal("self-signed certificate accepted without a pin")
	}

	if _, err := ParseFingerprint("abcd"); err == nil {
		t.Error("short fingerprint accepted")
	}
}

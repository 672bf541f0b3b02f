package servertest

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/sealer"
)

// WriteSealingKey writes a sealing key made of the byte b repeated (mode
// 0600) for t and returns its path, for --secret-key-file: replicas of one
// database share a key, so tests give them the same b, and a different b
// is a wrong key.
func WriteSealingKey(t testing.TB, b byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sealing.key")
	if err := os.WriteFile(path, bytes.Repeat([]byte{b}, sealer.KeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Balancer is a load balancer in front of replicas: it forwards every
// request to its current target, streaming answers as they come (held
// agent polls, event streams), and counts the agent polls it forwarded to
// each target, by agent, so that a test can tell where an agent polls.
type Balancer struct {
	mu     sync.Mutex
	target string
	proxy  *httputil.ReverseProxy
	polls  map[string]map[string]int
}

// NewBalancer starts a balancer on loopback pointed at target (a server's
// URL), closed when t ends, and returns it with its own URL.
func NewBalancer(t testing.TB, target string) (*Balancer, string) {
	t.Helper()
	b := &Balancer{polls: map[string]map[string]int{}}
	b.Point(target)
	front := httptest.NewServer(b)
	t.Cleanup(front.Close)
	return b, front.URL
}

// Point sends the requests that arrive from now on to target. Requests
// in flight stay with their replica, as a real balancer's connections do.
func (b *Balancer) Point(target string) {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	// A dead target is what the tests make on purpose; the client sees 502.
	p.ErrorLog = log.New(io.Discard, "", 0)
	b.mu.Lock()
	b.target, b.proxy = target, p
	b.mu.Unlock()
}

func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	target, p := b.target, b.proxy
	if r.URL.Path == agentproto.PathPoll {
		if id := agentID(r); id != "" {
			if b.polls[target] == nil {
				b.polls[target] = map[string]int{}
			}
			b.polls[target][id]++
		}
	}
	b.mu.Unlock()
	p.ServeHTTP(w, r)
}

// Polls is how many polls of the agent (by id) the balancer forwarded to
// target.
func (b *Balancer) Polls(target, agent string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.polls[target][agent]
}

// agentID is the id part of an agent's credentials ("Bearer ID:SECRET");
// the secret is not kept.
func agentID(r *http.Request) string {
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(cred, ":")
	return id
}

// Package httpx holds the HTTP plumbing every front door shares: request
// ids, client addresses, access logs with structured attributes, and the
// helpers to read them back inside handlers.
package httpx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	logAttrsKey
	clientAddrKey
)

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// NewRequestID makes a random request id.
func NewRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RequestID is the request id of ctx ("" outside a request).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

type logAttrs struct {
	mu    sync.Mutex
	attrs []slog.Attr
}

// SetLogAttrs adds attributes to the access log line of ctx's request
// (the principal, an operation id).
func SetLogAttrs(ctx context.Context, attrs ...slog.Attr) {
	if la, ok := ctx.Value(logAttrsKey).(*logAttrs); ok {
		la.mu.Lock()
		la.attrs = append(la.attrs, attrs...)
		la.mu.Unlock()
	}
}

// ClientAddr is the client's IP address: the peer's, or, when the peer is
// one of the reverse proxies the operator trusts (Middleware's trusted),
// the nearest address in X-Forwarded-For that is not such a proxy.
// Forwarding headers from any other peer are ignored: anyone can send them.
func ClientAddr(r *http.Request) string {
	if a, ok := r.Context().Value(clientAddrKey).(string); ok {
		return a
	}
	return peerAddr(r)
}

func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ParsePrefixes reads a list of CIDRs (or single addresses) such as
// --trusted-proxies takes.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or an address", s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out, nil
}

func trustedAddr(s string, trusted []netip.Prefix) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, false
	}
	a = a.Unmap().WithZone("")
	for _, p := range trusted {
		if p.Contains(a) {
			return a, true
		}
	}
	return a, false
}

// clientAddr walks X-Forwarded-For from the right (the hop nearest to us)
// while the hops are trusted proxies; the first other address is the
// client. A malformed hop ends the walk at the last trusted one.
func clientAddr(r *http.Request, trusted []netip.Prefix) string {
	peer := peerAddr(r)
	if len(trusted) == 0 {
		return peer
	}
	if _, ok := trustedAddr(peer, trusted); !ok {
		return peer
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := trustedAddr(hops[i], trusted)
		if !a.IsValid() {
			return client
		}
		client = a.String()
		if !ok {
			return client
		}
	}
	return client
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Middleware gives every request an id (the client's X-Request-Id if it is
// well-formed, else a new one), answers it in X-Request-Id, resolves the
// client's address (see ClientAddr; trusted are the reverse proxies whose
// X-Forwarded-For is believed), and writes one access log line per
// request. It never logs bodies or query strings, which could hold secrets.
func Middleware(log *slog.Logger, next http.Handler, trusted ...netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !requestIDRe.MatchString(id) {
			id = NewRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		la := &logAttrs{}
		ctx := context.WithValue(WithRequestID(r.Context(), id), logAttrsKey, la)
		ctx = context.WithValue(ctx, clientAddrKey, clientAddr(r, trusted))
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(ctx))
		if rec.status == 0 {
			rec.status = 200
		}
		attrs := []slog.Attr{
			slog.String("request_id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", time.Since(start)), slog.String("remote", ClientAddr(r.WithContext(ctx))),
		}
		la.mu.Lock()
		attrs = append(attrs, la.attrs...)
		la.mu.Unlock()
		log.LogAttrs(ctx, slog.LevelInfo, "http request", attrs...)
	})
}

// WriteJSON answers v as JSON with status. HTML escaping is off: the
// answers are data for programs, and escaping would mangle messages.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

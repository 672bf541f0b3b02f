// Package client is the Go client of fleetpass's native API (/v1).
//
// It is deliberately small: one method per endpoint, the wire types of
// package apiv1, typed errors (*APIError), bounded retries of requests that
// are safe to repeat, a Server-Sent Events reader that resumes where it left
// off, and WaitOperation for the asynchronous operations.
//
// Requests that are retried: GET, HEAD, PUT and DELETE, and POSTs, which this
// client always sends with an Idempotency-Key header that it reuses on its
// own retries so the server can answer a repeated POST with the first answer.
// A request is retried on connection errors and on 429 and 503 answers,
// honouring Retry-After, a bounded number of times.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultUserAgent is sent when WithUserAgent is not used.
const DefaultUserAgent = "fleetpass-client"

// Defaults of the retry policy (see WithRetries).
const (
	DefaultMaxAttempts  = 4
	DefaultMaxRetryWait = 30 * time.Second
)

// Limits on how much of an answer is read, so a confused or hostile server
// cannot make the client allocate without bound.
const (
	maxBodyBytes  = 64 << 20
	maxErrorBytes = 64 << 10
)

// Client talks to one fleetpass server. It is safe for concurrent use.
type Client struct {
	base         *url.URL
	keyID        string
	secret       string
	hc           *http.Client
	userAgent    string
	maxAttempts  int
	maxRetryWait time.Duration
	// sleep is replaced in tests so retries do not slow them down.
	sleep func(context.Context, time.Duration) error
}

// Option configures a Client.
type Option func(*options) error

type options struct {
	hc           *http.Client
	userAgent    string
	rootCAs      *x509.CertPool
	pin          []byte
	maxAttempts  int
	maxRetryWait time.Duration
}

// WithHTTPClient makes the client send its requests through hc. Do not give
// hc an overall Timeout: it would cut the event stream and long waits short;
// bound calls with their context instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error {
		if hc == nil {
			return errors.New("client: nil *http.Client")
		}
		o.hc = hc
		return nil
	}
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(o *options) error {
		o.userAgent = ua
		return nil
	}
}

// WithRootCAs trusts the CA certificates in pemCerts (PEM) instead of the
// system's, for servers whose certificate a private CA signed.
func WithRootCAs(pemCerts []byte) Option {
	return func(o *options) error {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCerts) {
			return errors.New("client: no certificate found in the CA PEM data")
		}
		o.rootCAs = pool
		return nil
	}
}

// WithPinnedCertificate accepts exactly the server certificate whose SHA-256
// fingerprint (of the leaf certificate's DER bytes) is given, in hex, with or
// without colons and an optional "sha256:" prefix. It is meant for servers
// with a self-signed certificate; the pin replaces chain and name checks.
func WithPinnedCertificate(fingerprint string) Option {
	return func(o *options) error {
		pin, err := ParseFingerprint(fingerprint)
		if err != nil {
			return err
		}
		o.pin = pin
		return nil
	}
}

// WithRetries sets how many times in all a retryable request is tried
// (at least 1) and the longest the client waits between two tries; a server
// asking for a longer Retry-After gets its error returned instead.
func WithRetries(maxAttempts int, maxWait time.Duration) Option {
	return func(o *options) error {
		if maxAttempts < 1 {
			return errors.New("client: maxAttempts must be at least 1")
		}
		o.maxAttempts = maxAttempts
		o.maxRetryWait = maxWait
		return nil
	}
}

// ParseFingerprint decodes a SHA-256 certificate fingerprint written in hex,
// with or without colons and an optional "sha256:" prefix.
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if len(t) > 7 && strings.EqualFold(t[:7], "sha256:") {
		t = t[7:]
	}
	t = strings.ReplaceAll(t, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("client: %q is not a SHA-256 fingerprint (64 hex digits)", s)
	}
	return b, nil
}

// New returns a client of the server at baseURL (such as
// http://127.0.0.1:8080) that authenticates with the API key keyID/secret.
// An empty keyID sends no credentials, which is enough for /healthz.
func New(baseURL, keyID, secret string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("client: server URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q: want http:// or https:// and a host", baseURL)
	}
	if u.User != nil {
		// Credentials in a URL end up in logs and shell history.
		return nil, errors.New("client: server URL must not carry credentials")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""

	o := options{
		userAgent:    DefaultUserAgent,
		maxAttempts:  DefaultMaxAttempts,
		maxRetryWait: DefaultMaxRetryWait,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	hc, err := buildHTTPClient(o)
	if err != nil {
		return nil, err
	}
	return &Client{
		base:         u,
		keyID:        keyID,
		secret:       secret,
		hc:           hc,
		userAgent:    o.userAgent,
		maxAttempts:  o.maxAttempts,
		maxRetryWait: o.maxRetryWait,
		sleep:        sleepCtx,
	}, nil
}

func buildHTTPClient(o options) (*http.Client, error) {
	if o.rootCAs == nil && o.pin == nil {
		if o.hc != nil {
			return o.hc, nil
		}
		return &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, nil
	}
	hc := &http.Client{}
	if o.hc != nil {
		copied := *o.hc
		hc = &copied
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, errors.New("client: TLS options need the HTTP client's Transport to be an *http.Transport")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tr.TLSClientConfig != nil {
		cfg = tr.TLSClientConfig.Clone()
	}
	if o.rootCAs != nil {
		cfg.RootCAs = o.rootCAs
	}
	if o.pin != nil {
		pin := o.pin
		// The pin is the whole trust decision, so the default chain check
		// (which a self-signed certificate fails) is replaced by it.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("fleetpass: server sent no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(sum[:], pin) {
				return fmt.Errorf("fleetpass: server certificate fingerprint %s does not match the pinned one", hex.EncodeToString(sum[:]))
			}
			return nil
		}
	}
	tr.TLSClientConfig = cfg
	hc.Transport = tr
	return hc, nil
}

// APIError is an error answer of the server. Use errors.As to get it.
type APIError struct {
	Status    int // HTTP status
	Code      string
	Message   string
	RequestID string
	Details   map[string]any
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(e.Code)
		b.WriteString(": ")
	}
	if e.Message != "" {
		b.WriteString(e.Message)
	} else {
		b.WriteString(http.StatusText(e.Status))
	}
	fmt.Fprintf(&b, " (HTTP %d", e.Status)
	if e.RequestID != "" {
		fmt.Fprintf(&b, ", request id %s", e.RequestID)
	}
	b.WriteString(")")
	return b.String()
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// IsStatus reports whether err is an *APIError with the given HTTP status.
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

// request is one API call, kept whole so it can be sent again.
type request struct {
	method string
	path   string
	query  url.Values
	body   []byte
	// idemKey is sent as Idempotency-Key; it makes a POST retryable.
	idemKey string
	// accept is the media type asked for.
	accept string
}

func (r *request) retryable() bool {
	switch r.method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return r.idemKey != ""
}

// response is what a call returns besides its decoded body.
type response struct {
	status int
	header http.Header
}

func (c *Client) newHTTPRequest(ctx context.Context, r *request) (*http.Request, error) {
	u := *c.base
	u.Path = c.base.Path + r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if r.idemKey != "" {
		req.Header.Set("Idempotency-Key", r.idemKey)
	}
	if c.keyID != "" {
		req.SetBasicAuth(c.keyID, c.secret)
	}
	return req, nil
}

// do sends r, retrying it when that is safe, and decodes a 2xx answer's
// body into out (when out is not nil).
func (c *Client) do(ctx context.Context, r *request, out any) (*response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, r)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.path, ctx.Err())
			}
			if !r.retryable() || attempt >= c.maxAttempts {
				return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
			}
			wait = backoff(attempt)
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			defer resp.Body.Close()
			if out != nil && resp.StatusCode != http.StatusNoContent {
				if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(out); err != nil {
					return nil, fmt.Errorf("%s %s: decoding the answer: %w", r.method, r.path, err)
				}
			}
			return &response{status: resp.StatusCode, header: resp.Header}, nil
		default:
			apiErr := readAPIError(resp)
			resp.Body.Close()
			if !r.retryable() || attempt >= c.maxAttempts ||
				(apiErr.Status != http.StatusTooManyRequests && apiErr.Status != http.StatusServiceUnavailable) {
				return nil, apiErr
			}
			wait = apiErr.RetryAfter
			if wait == 0 {
				wait = backoff(attempt)
			}
			if wait > c.maxRetryWait {
				return nil, apiErr
			}
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
		}
	}
}

func (c *Client) send(ctx context.Context, r *request) (*http.Response, error) {
	req, err := c.newHTTPRequest(ctx, r)
	if err != nil {
		return nil, err
	}
	return c.hc.Do(req)
}

// readAPIError turns an error answer into an *APIError, whatever its body.
func readAPIError(resp *http.Response) *APIError {
	e := &APIError{
		Status:     resp.StatusCode,
		RequestID:  resp.Header.Get("X-Request-Id"),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After")),
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	var body struct {
		Error *struct {
			Code      string         `json:"code"`
			Message   string         `json:"message"`
			RequestID string         `json:"requestId"`
			Details   map[string]any `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error != nil {
		e.Code, e.Message, e.Details = body.Error.Code, body.Error.Message, body.Error.Details
		if body.Error.RequestID != "" {
			e.RequestID = body.Error.RequestID
		}
		return e
	}
	// Not our JSON (a proxy, a load balancer): keep a short, printable part.
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}

func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// backoff is the pause before try attempt+1: exponential from 250ms, capped
// at 8s, with jitter so that many clients do not come back in step.
func backoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << min(attempt-1, 5)
	d = min(d, 8*time.Second)
	return d/2 + mrand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// newIdempotencyKey returns a random key for one logical POST.
func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// InstanceFilter selects instances for ListInstances. Empty fields do not
// filter. Cursor is the NextCursor of the previous page.
type InstanceFilter struct {
	State      string
	OS         string
	NamePrefix string
	Tenant     string
	Limit      int
	Cursor     string
}

// OperationFilter selects operations for ListOperations.
type OperationFilter struct {
	InstanceID string
	Status     string
	Limit      int
	Cursor     string
}

// Page selects one page of a list that has no other filter.
type Page struct {
	Limit  int
	Cursor string
}

func addPage(q url.Values, limit int, cursor string) {
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
}

func setIf(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func (c *Client) get(ctx context.Context, p string, q url.Values, out any) error {
	_, err := c.do(ctx, &request{method: http.MethodGet, path: p, query: q}, out)
	return err
}

func (c *Client) post(ctx context.Context, p string, in, out any) (*response, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("client: encoding the request: %w", err)
	}
	return c.do(ctx, &request{method: http.MethodPost, path: p, body: body, idemKey: newIdempotencyKey()}, out)
}

func (c *Client) delete(ctx context.Context, p string) error {
	_, err := c.do(ctx, &request{method: http.MethodDelete, path: p}, nil)
	return err
}

// ListInstances returns one page of instances.
func (c *Client) ListInstances(ctx context.Context, f InstanceFilter) (*apiv1.InstanceList, error) {
	q := url.Values{}
	setIf(q, "state", f.State)
	setIf(q, "os", f.OS)
	setIf(q, "namePrefix", f.NamePrefix)
	setIf(q, "tenant", f.Tenant)
	addPage(q, f.Limit, f.Cursor)
	var out apiv1.InstanceList
	if err := c.get(ctx, "/v1/instances", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetInstance returns one instance.
func (c *Client) GetInstance(ctx context.Context, id string) (*apiv1.Instance, error) {
	var out apiv1.Instance
	if err := c.get(ctx, "/v1/instances/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateInstance registers an instance.
func (c *Client) CreateInstance(ctx context.Context, in apiv1.InstanceCreate) (*apiv1.Instance, error) {
	var out apiv1.Instance
	if _, err := c.post(ctx, "/v1/instances", in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetBMC changes a bare-metal server's BMC settings (admin keys): a rotated
// password, another user, cipher suite or address. The server checks them
// against the BMC before it stores them.
func (c *Client) SetBMC(ctx context.Context, id string, in apiv1.BMCUpdate) (*apiv1.Instance, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("client: encoding the request: %w", err)
	}
	var out apiv1.Instance
	if _, err := c.do(ctx, &request{method: http.MethodPut, path: "/v1/instances/" + url.PathEscape(id) + "/bmc", body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteInstance removes an instance from fleetpass.
func (c *Client) DeleteInstance(ctx context.Context, id string) error {
	return c.delete(ctx, "/v1/instances/"+url.PathEscape(id))
}

// ResetPassword asks for a password reset. The answer is the accepted
// operation, carrying GeneratedPassword when req.Generate was set. Callers
// that hold the password in a []byte they want to wipe should use
// ResetPasswordSecret, since a Go string cannot be wiped.
func (c *Client) ResetPassword(ctx context.Context, req apiv1.PasswordReset) (*apiv1.Operation, error) {
	return c.ResetPasswordSecret(ctx, req, []byte(req.Password))
}

// ResetPasswordSecret is ResetPassword with the password given as bytes
// (req.Password is ignored). The password is never turned into a string,
// and the client zeroes its own encoded copy of the request once the call
// is over; the caller remains in charge of wiping password.
func (c *Client) ResetPasswordSecret(ctx context.Context, req apiv1.PasswordReset, password []byte) (*apiv1.Operation, error) {
	req.Password = ""
	body, err := encodeWithPassword(req, password)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	return c.postOperation(ctx, "/v1/password-resets", body)
}

// PowerAction asks for instances to be started, stopped or rebooted.
func (c *Client) PowerAction(ctx context.Context, req apiv1.PowerAction) (*apiv1.Operation, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("client: encoding the request: %w", err)
	}
	return c.postOperation(ctx, "/v1/power-actions", body)
}

func (c *Client) postOperation(ctx context.Context, p string, body []byte) (*apiv1.Operation, error) {
	var op apiv1.Operation
	resp, err := c.do(ctx, &request{method: http.MethodPost, path: p, body: body, idemKey: newIdempotencyKey()}, &op)
	if err != nil {
		return nil, err
	}
	if op.ID == "" {
		// The Location header names the operation even if the body is thin.
		if loc := resp.header.Get("Location"); loc != "" {
			op.ID = path.Base(loc)
		}
	}
	return &op, nil
}

// encodeWithPassword encodes req as JSON with a "password" member whose
// value is written straight from password, so that the only copies of it are
// this buffer (which the caller clears) and the caller's own slice.
func encodeWithPassword(req apiv1.PasswordReset, password []byte) ([]byte, error) {
	rest, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("client: encoding the request: %w", err)
	}
	if len(password) == 0 {
		return rest, nil
	}
	if !utf8.Valid(password) {
		return nil, errors.New("client: the password is not valid UTF-8")
	}
	buf := make([]byte, 0, len(rest)+len(password)*2+16)
	buf = append(buf, `{"password":"`...)
	for _, b := range password {
		switch {
		case b == '"' || b == '\\':
			buf = append(buf, '\\', b)
		case b < 0x20:
			const hexDigits = "0123456789abcdef"
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
		default:
			buf = append(buf, b)
		}
	}
	buf = append(buf, '"')
	if len(rest) > 2 { // rest is {...}; splice its members after ours
		buf = append(buf, ',')
		buf = append(buf, rest[1:]...)
	} else {
		buf = append(buf, '}')
	}
	return buf, nil
}

// ListOperations returns one page of operations, newest first.
func (c *Client) ListOperations(ctx context.Context, f OperationFilter) (*apiv1.OperationList, error) {
	q := url.Values{}
	setIf(q, "instanceId", f.InstanceID)
	setIf(q, "status", f.Status)
	addPage(q, f.Limit, f.Cursor)
	var out apiv1.OperationList
	if err := c.get(ctx, "/v1/operations", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetOperation returns an operation as it is now.
func (c *Client) GetOperation(ctx context.Context, id string) (*apiv1.Operation, error) {
	var out apiv1.Operation
	if err := c.get(ctx, "/v1/operations/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WaitOperationFor makes one call to /wait: it returns the operation once it
// is finished or when timeout has passed, whichever comes first. Check
// OperationDone on the result.
func (c *Client) WaitOperationFor(ctx context.Context, id string, timeout time.Duration) (*apiv1.Operation, error) {
	q := url.Values{}
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	var out apiv1.Operation
	if err := c.get(ctx, "/v1/operations/"+url.PathEscape(id)+"/wait", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// waitSlice is how long one /wait call of WaitOperation may last; shorter
// than common proxy idle timeouts.
const waitSlice = 30 * time.Second

// WaitOperation returns the operation once it has finished, calling /wait as
// many times as needed. Bound it with ctx.
func (c *Client) WaitOperation(ctx context.Context, id string) (*apiv1.Operation, error) {
	for {
		start := time.Now()
		op, err := c.WaitOperationFor(ctx, id, waitSlice)
		if err != nil {
			return nil, err
		}
		if OperationDone(op) {
			return op, nil
		}
		// A server that answers at once without holding the request would
		// otherwise make this loop spin.
		if time.Since(start) < time.Second {
			if err := c.sleep(ctx, time.Second); err != nil {
				return nil, fmt.Errorf("waiting for operation %s: %w", id, err)
			}
		}
	}
}

// OperationDone reports whether op has finished.
func OperationDone(op *apiv1.Operation) bool {
	switch op.Status {
	case apiv1.OperationSucceeded, apiv1.OperationFailed, apiv1.OperationPartial:
		return true
	}
	// A status this client does not know yet counts as finished when the
	// server says when it finished.
	return op.FinishedAt != nil && op.Status != apiv1.OperationRunning
}

// ListKeys lists API keys.
func (c *Client) ListKeys(ctx context.Context) (*apiv1.KeyList, error) {
	var out apiv1.KeyList
	if err := c.get(ctx, "/v1/keys", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateKey creates an API key; the answer is the only time its secret is
// shown.
func (c *Client) CreateKey(ctx context.Context, in apiv1.KeyCreate) (*apiv1.KeyCreated, error) {
	var out apiv1.KeyCreated
	if _, err := c.post(ctx, "/v1/keys", in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeKey revokes an API key.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.delete(ctx, "/v1/keys/"+url.PathEscape(id))
}

// ListTenants lists tenants.
func (c *Client) ListTenants(ctx context.Context) (*apiv1.TenantList, error) {
	var out apiv1.TenantList
	if err := c.get(ctx, "/v1/tenants", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateTenant creates a tenant.
func (c *Client) CreateTenant(ctx context.Context, in apiv1.TenantCreate) (*apiv1.Tenant, error) {
	var out apiv1.Tenant
	if _, err := c.post(ctx, "/v1/tenants", in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAudit returns one page of the audit trail, newest first.
func (c *Client) ListAudit(ctx context.Context, p Page) (*apiv1.AuditList, error) {
	q := url.Values{}
	addPage(q, p.Limit, p.Cursor)
	var out apiv1.AuditList
	if err := c.get(ctx, "/v1/audit", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health checks /healthz: nil means the server process answers.
func (c *Client) Health(ctx context.Context) error {
	return c.get(ctx, "/healthz", nil, nil)
}

// Ready checks /readyz: nil means the server can take requests.
func (c *Client) Ready(ctx context.Context) error {
	return c.get(ctx, "/readyz", nil, nil)
}

// OpenAPI returns the server's OpenAPI document.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.get(ctx, "/v1/openapi.json", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

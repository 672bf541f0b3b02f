package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/fleetpass/fleetpass/internal/sign/capi2"
	"github.com/fleetpass/fleetpass/internal/sign/zc2"
)

// ActionCaller calls the action API (ZC2-HMAC-SHA256) of the server at URL
// with one key, as a client library would.
type ActionCaller struct {
	URL, KeyID, Secret string
	// Version is X-ZC-Version (default 2022-11-20).
	Version string
	Client  *http.Client
}

// Call posts body as JSON to the action API's product path ("vm" or
// "zec") with action, and returns the HTTP status and the decoded answer.
func (c ActionCaller) Call(ctx context.Context, product, action string, body any) (int, map[string]any, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/api/v2/"+product, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	version := c.Version
	if version == "" {
		version = "2022-11-20"
	}
	req.Header.Set("X-ZC-Action", action)
	req.Header.Set("X-ZC-Version", version)
	zc2.SignRequest(req, b, c.KeyID, []byte(c.Secret), time.Now())
	return sendJSON(c.Client, req)
}

// BareMetalCaller calls the bare-metal API (query-string HmacSHA256) of
// the server at URL with one key.
type BareMetalCaller struct {
	URL, KeyID, Secret string
	Client             *http.Client
}

// Call sends action with params by GET, signed, and returns the HTTP
// status and the decoded answer ({"code", "message", "data"}).
func (c BareMetalCaller) Call(ctx context.Context, action string, params url.Values) (int, map[string]any, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return 0, nil, err
	}
	q := url.Values{}
	for k, v := range params {
		q[k] = append([]string(nil), v...)
	}
	n, err := rand.Int(rand.Reader, big.NewInt(1<<40))
	if err != nil {
		return 0, nil, err
	}
	q.Set("Action", action)
	q.Set("Timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	q.Set("Nonce", strconv.FormatInt(n.Int64()+1, 10))
	q.Set("SecretId", c.KeyID)
	q.Set("SignatureMethod", "HmacSHA256")
	const path = "/v2/index.php"
	if err := capi2.Sign(http.MethodGet, u.Host, path, q, []byte(c.Secret)); err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+path+"?"+q.Encode(), nil)
	if err != nil {
		return 0, nil, err
	}
	return sendJSON(c.Client, req)
}

func sendJSON(client *http.Client, req *http.Request) (int, map[string]any, error) {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: status %d, not JSON: %w: %.200s", req.Method, req.URL.Path, resp.StatusCode, err, data)
	}
	return resp.StatusCode, m, nil
}

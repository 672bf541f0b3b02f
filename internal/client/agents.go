package client

import (
	"context"
	"net/url"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// CreateAgentToken creates a one-time enrolment token for the fleetpass
// agent; the answer is the only time the token is shown.
func (c *Client) CreateAgentToken(ctx context.Context, in apiv1.AgentTokenCreate) (*apiv1.AgentTokenCreated, error) {
	var out apiv1.AgentTokenCreated
	if _, err := c.post(ctx, "/v1/agent-tokens", in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAgentTokens lists the enrolment tokens the key may see (never the
// tokens themselves).
func (c *Client) ListAgentTokens(ctx context.Context) (*apiv1.AgentTokenList, error) {
	var out apiv1.AgentTokenList
	if err := c.get(ctx, "/v1/agent-tokens", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeAgentToken revokes an unused enrolment token.
func (c *Client) RevokeAgentToken(ctx context.Context, id string) error {
	return c.delete(ctx, "/v1/agent-tokens/"+url.PathEscape(id))
}

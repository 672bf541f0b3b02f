package client

import (
	"context"

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

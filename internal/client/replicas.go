package client

import (
	"context"
	"net/url"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// ListReplicas lists the servers sharing the database (admin keys).
func (c *Client) ListReplicas(ctx context.Context) (*apiv1.ReplicaList, error) {
	var out apiv1.ReplicaList
	if err := c.get(ctx, "/v1/replicas", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ForgetReplica drops a dead replica from the listing.
func (c *Client) ForgetReplica(ctx context.Context, id string) error {
	return c.delete(ctx, "/v1/replicas/"+url.PathEscape(id))
}

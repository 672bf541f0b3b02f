package client

import (
	"context"
	"net/url"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// AddHost adds a libvirt host (admin keys only).
func (c *Client) AddHost(ctx context.Context, in apiv1.HostCreate) (*apiv1.Host, error) {
	var out apiv1.Host
	if _, err := c.post(ctx, "/v1/hosts", in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListHosts lists the hosts the key may see.
func (c *Client) ListHosts(ctx context.Context) (*apiv1.HostList, error) {
	var out apiv1.HostList
	if err := c.get(ctx, "/v1/hosts", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetHost reads one host.
func (c *Client) GetHost(ctx context.Context, id string) (*apiv1.Host, error) {
	var out apiv1.Host
	if err := c.get(ctx, "/v1/hosts/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveHost removes a host and its instances.
func (c *Client) RemoveHost(ctx context.Context, id string) error {
	return c.delete(ctx, "/v1/hosts/"+url.PathEscape(id))
}

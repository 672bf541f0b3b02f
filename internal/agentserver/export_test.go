package agentserver

import (
	"context"
	"sync/atomic"

	"github.com/fleetpass/fleetpass/internal/store"
)

// QueueCounts counts a held poll's calls to the command queue.
type QueueCounts struct {
	Takes, Reads atomic.Int64
	next         commandReader
}

func (c *QueueCounts) Take(ctx context.Context, agentID string) ([]store.AgentCommand, error) {
	c.Takes.Add(1)
	return c.next.Take(ctx, agentID)
}

func (c *QueueCounts) Has(ctx context.Context, agentID string) (bool, error) {
	c.Reads.Add(1)
	return c.next.Has(ctx, agentID)
}

// CountQueue makes a's polls count what they do to the command queue.
func CountQueue(a *API) *QueueCounts {
	c := &QueueCounts{next: a.commands}
	a.commands = c
	return c
}

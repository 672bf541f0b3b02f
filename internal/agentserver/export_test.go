package agentserver

import (
	"context"
	"sync/atomic"

	"github.com/fleetpass/fleetpass/internal/store"
)

// QueueCounts counts a held poll's calls to the command queue.
type QueueCounts struct {
	Takes, Reads atomic.Int64
	next         commandQueue
}

func (c *QueueCounts) TakeAgentCommands(ctx context.Context, q store.Querier, agentID string) ([]store.AgentCommand, error) {
	c.Takes.Add(1)
	return c.next.TakeAgentCommands(ctx, q, agentID)
}

func (c *QueueCounts) HasAgentCommands(ctx context.Context, q store.Querier, agentID string) (bool, error) {
	c.Reads.Add(1)
	return c.next.HasAgentCommands(ctx, q, agentID)
}

// CountQueue makes a's polls count what they do to the command queue.
func CountQueue(a *API) *QueueCounts {
	c := &QueueCounts{next: a.queue}
	a.queue = c
	return c
}

package agentserver

import "github.com/fleetpass/fleetpass/internal/store"

// follow wakes this replica's waiters on the database's notifications
// (PostgreSQL): a command stored by any replica wakes its agent's held
// poll here, and an acknowledgement taken by any replica wakes the
// SetPassword waiting for it here. After the listener reconnects, every
// waiter re-reads, since notifications sent meanwhile are lost.
func (c *Channel) follow(s *store.Store) {
	s.OnNotify(store.NotifyAgentCommands, c.polls.wake)
	s.OnNotify(store.NotifyAgentAcks, c.acks.wake)
}

// wake wakes the waiters of key, or every waiter for store.WakeAll.
func (n *notifier) wake(key string) {
	if key != store.WakeAll {
		n.notify(key)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, chans := range n.m {
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

package core

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"github.com/fleetpass/fleetpass/internal/store"
)

// CodeCommandNotSent refuses an agent's acknowledgement of a command it
// was never sent: another agent's, or one still waiting to be delivered.
const CodeCommandNotSent = "AGENT_COMMAND_NOT_SENT"

// maxAckMessage bounds the message an agent reports with a result.
const maxAckMessage = 1024

// AgentQueue holds the fleetpass agents' rows and commands: what the agent
// channel (a driver) and the agent endpoints (a front door) read and
// write, with the rules of acknowledging. It needs only the store, so the
// channel can be made before the Service whose drivers it is part of.
type AgentQueue struct {
	store *store.Store
}

// NewAgentQueue makes the queue over s.
func NewAgentQueue(s *store.Store) *AgentQueue { return &AgentQueue{store: s} }

// Store is the queue's store (for its clock).
func (q *AgentQueue) Store() *store.Store { return q.store }

// Agent reads an agent; an unknown one wraps store.ErrNotFound.
func (q *AgentQueue) Agent(ctx context.Context, id string) (store.Agent, error) {
	return q.store.GetAgent(ctx, q.store.DB, id)
}

// Queue stores a command for its agent, superseding the unacknowledged
// ones for the same user.
func (q *AgentQueue) Queue(ctx context.Context, c store.AgentCommand) error {
	return q.store.InsertAgentCommand(ctx, q.store.DB, c)
}

// Command reads a command's state and result.
func (q *AgentQueue) Command(ctx context.Context, id string) (store.AgentCommand, error) {
	return q.store.GetAgentCommand(ctx, q.store.DB, id)
}

// Drop deletes a command nobody waits for any more, unless acknowledged.
func (q *AgentQueue) Drop(ctx context.Context, id string) error {
	return q.store.DeleteAgentCommand(ctx, q.store.DB, id)
}

// NotReady clears an agent's readiness (its machine was staged for while
// off: it is alive again only once it polled as ready).
func (q *AgentQueue) NotReady(ctx context.Context, agentID string) error {
	return q.store.AgentNotReady(ctx, q.store.DB, agentID)
}

// Polled records an agent's poll; see store.AgentPolled.
func (q *AgentQueue) Polled(ctx context.Context, agentID, session string, ready bool, version string) (seq int64, changed bool, err error) {
	if len(session) > 64 || len(version) > 64 {
		return 0, false, errorf(CodeInvalidArgument, "session and version: at most 64 characters")
	}
	seq, changed, err = q.store.AgentPolled(ctx, q.store.DB, agentID, session, ready, version)
	if err != nil {
		return 0, false, storeFailed(err)
	}
	return seq, changed, nil
}

// Take marks the agent's waiting commands sent and returns them, oldest
// first. It writes; Has only reads.
func (q *AgentQueue) Take(ctx context.Context, agentID string) ([]store.AgentCommand, error) {
	cmds, err := q.store.TakeAgentCommands(ctx, q.store.DB, agentID)
	if err != nil {
		return nil, storeFailed(err)
	}
	return cmds, nil
}

// Has reports whether commands wait for the agent.
func (q *AgentQueue) Has(ctx context.Context, agentID string) (bool, error) {
	return q.store.HasAgentCommands(ctx, q.store.DB, agentID)
}

// Ack records agentID's result for a command it was sent, and reports
// whether it did: a command superseded or acknowledged meanwhile is
// answered false with no error, since nothing waits for it. A command the
// agent was never sent (another agent's, or one not yet delivered) is
// refused: an agent cannot report on what it never received.
func (q *AgentQueue) Ack(ctx context.Context, agentID string, ack agentproto.Ack) (bool, error) {
	switch ack.Result {
	case agentproto.ResultOK, agentproto.ResultUserNotFound, agentproto.ResultFailed, agentproto.ResultBadCommand:
	default:
		return false, fieldErrorf(CodeInvalidArgument, "result", "unknown")
	}
	if len(ack.Message) > maxAckMessage {
		ack.Message = strings.ToValidUTF8(ack.Message[:maxAckMessage], "")
	}
	if ctlchar.Contains(ack.Message) {
		// The agent replaces them before sending; one that does not is
		// refused rather than have its text reach a terminal.
		return false, fieldErrorf(CodeInvalidArgument, "message", "no control characters")
	}
	cmd, err := q.store.GetAgentCommand(ctx, q.store.DB, ack.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, storeFailed(err)
	}
	switch {
	case cmd.AgentID != agentID:
		return false, errorf(CodeCommandNotSent, "command %q was not sent to this agent", ack.ID)
	case cmd.State == store.CommandPending:
		return false, errorf(CodeCommandNotSent, "command %q has not been sent yet", ack.ID)
	case cmd.State != store.CommandSent:
		return false, nil // acknowledged already
	}
	err = q.store.AckAgentCommand(ctx, q.store.DB, agentID, ack.ID, ack.Result, ack.ExitCode, ack.Message)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // superseded or acknowledged meanwhile
	}
	if err != nil {
		return false, storeFailed(fmt.Errorf("agent %s: %w", agentID, err))
	}
	return true, nil
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AgentToken is an enrolment token's record (its hash, never the token).
type AgentToken struct {
	ID           string
	Tenant       string
	InstanceName string
	TokenHash    []byte
	CreatedBy    string
	CreatedAt    time.Time
	ExpiresAt    time.Time
}

// CreateAgentToken inserts an enrolment token.
func (s *Store) CreateAgentToken(ctx context.Context, q Querier, t AgentToken) error {
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO agent_tokens (id, tenant_id, instance_name, token_hash, created_by,
		created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Tenant, t.InstanceName, t.TokenHash, t.CreatedBy, ms(t.CreatedAt), ms(t.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create agent token: %w", err)
	}
	return nil
}

// UseAgentToken marks the unused, unexpired token with hash as used by
// agentID and returns it. Any other token gives ErrNotFound: unknown, used
// and expired tokens are refused alike.
func (s *Store) UseAgentToken(ctx context.Context, q Querier, hash []byte, agentID string, now time.Time) (AgentToken, error) {
	var t AgentToken
	var created, expires int64
	err := s.c(q).QueryRowContext(ctx, `UPDATE agent_tokens SET used_at = ?, agent_id = ?
		WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?
		RETURNING id, tenant_id, instance_name, created_by, created_at, expires_at`,
		ms(now), agentID, hash, ms(now)).Scan(&t.ID, &t.Tenant, &t.InstanceName, &t.CreatedBy, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("agent token: %w", ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("use agent token: %w", err)
	}
	t.CreatedAt, t.ExpiresAt = fromMS(created), fromMS(expires)
	return t, nil
}

// Agent is an enrolled agent.
type Agent struct {
	ID, InstanceID, Tenant    string
	PublicKey, SecretHash     []byte
	Hostname, OSType, Version string
	CreatedAt                 time.Time
	Session                   string
	Ready, Connected          bool
	PollSeq                   int64
	LastSeenAt                *time.Time
}

const agentColumns = `id, instance_id, tenant_id, public_key, secret_hash, hostname, os_type, version, created_at,
	session, ready, connected, poll_seq, last_seen_at`

func scanAgent(sc interface{ Scan(...any) error }) (Agent, error) {
	var a Agent
	var created int64
	var ready, connected int
	var seen sql.NullInt64
	err := sc.Scan(&a.ID, &a.InstanceID, &a.Tenant, &a.PublicKey, &a.SecretHash, &a.Hostname, &a.OSType, &a.Version,
		&created, &a.Session, &ready, &connected, &a.PollSeq, &seen)
	a.CreatedAt, a.Ready, a.Connected, a.LastSeenAt = fromMS(created), ready == 1, connected == 1, fromNullMS(seen)
	return a, err
}

// CreateAgent inserts an agent.
func (s *Store) CreateAgent(ctx context.Context, q Querier, a Agent) error {
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO agents (id, instance_id, tenant_id, public_key, secret_hash, hostname,
		os_type, version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.InstanceID, a.Tenant, a.PublicKey, a.SecretHash, a.Hostname, a.OSType, a.Version, ms(a.CreatedAt))
	if err != nil {
		return fmt.Errorf("create agent: %w", err)
	}
	return nil
}

// GetAgent reads an agent.
func (s *Store) GetAgent(ctx context.Context, q Querier, id string) (Agent, error) {
	a, err := scanAgent(s.c(q).QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("agent %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return a, fmt.Errorf("get agent: %w", err)
	}
	return a, nil
}

// AgentPolled records a poll of the agent's session: it is connected, seen
// now, ready or not. It returns the poll's sequence number and whether the
// session or readiness changed, or the agent was marked disconnected: one
// statement, so a concurrent AgentGone is either before it (and this poll
// is a change) or finds its poll superseded.
func (s *Store) AgentPolled(ctx context.Context, q Querier, id, session string, ready bool, version string) (seq int64, changed bool, err error) {
	var changedSeq int64
	// SET's expressions read the row being replaced, on both databases.
	err = s.c(q).QueryRowContext(ctx, `UPDATE agents SET
		changed_seq = CASE WHEN session <> ? OR ready <> ? OR connected <> 1 THEN poll_seq + 1 ELSE changed_seq END,
		session = ?, ready = ?, connected = 1, poll_seq = poll_seq + 1,
		last_seen_at = ?, version = CASE WHEN ? = '' THEN version ELSE ? END WHERE id = ? RETURNING poll_seq, changed_seq`,
		session, boolInt(ready), session, boolInt(ready), ms(s.now()), version, version, id).Scan(&seq, &changedSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("agent %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, false, fmt.Errorf("agent poll: %w", err)
	}
	return seq, changedSeq == seq, nil
}

// AgentGone marks the agent disconnected if seq is still its latest poll,
// and reports whether it did.
func (s *Store) AgentGone(ctx context.Context, q Querier, id string, seq int64) (bool, error) {
	res, err := s.c(q).ExecContext(ctx, `UPDATE agents SET connected = 0, ready = 0 WHERE id = ? AND poll_seq = ?`, id, seq)
	if err != nil {
		return false, fmt.Errorf("agent gone: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// AgentCommand is a command for an agent.
type AgentCommand struct {
	ID, AgentID, Kind, User string
	Staged                  bool
	Sealed                  []byte
	State                   string
	ExitCode                int
	Message                 string
	CreatedAt               time.Time
}

// Command states besides the agent's results.
const (
	CommandPending = "pending"
	CommandSent    = "sent"
)

// InsertAgentCommand adds a command, dropping the unacknowledged ones for
// the same agent and user: a newer password supersedes an older one that
// was never applied, which must then never be applied after it. A command
// whose id is already acknowledged is kept as it is.
func (s *Store) InsertAgentCommand(ctx context.Context, q Querier, c AgentCommand) error {
	if db, ok := q.(*sql.DB); ok && db == s.DB {
		// One transaction: the supersede and the insert land together,
		// and the agent's wake-up with them.
		return s.InTx(ctx, func(tx *sql.Tx) error { return s.insertAgentCommand(ctx, tx, c) })
	}
	return s.insertAgentCommand(ctx, q, c)
}

func (s *Store) insertAgentCommand(ctx context.Context, q Querier, c AgentCommand) error {
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM agent_commands WHERE agent_id = ? AND user_name = ? AND state IN (?, ?)`,
		c.AgentID, c.User, CommandPending, CommandSent); err != nil {
		return fmt.Errorf("supersede agent commands: %w", err)
	}
	// Acknowledged commands are kept a day as a record (results, never
	// secrets), pruned per agent here so no sweeper is needed.
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM agent_commands WHERE agent_id = ? AND acked_at < ?`,
		c.AgentID, ms(s.now().Add(-24*time.Hour))); err != nil {
		return fmt.Errorf("prune agent commands: %w", err)
	}
	// A command whose id exists is one staged again under the same key
	// (the agent channel's StageAs) after the agent acknowledged it: the
	// same password, so its result stands.
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO agent_commands (id, agent_id, kind, user_name, staged, sealed, state,
		created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		c.ID, c.AgentID, c.Kind, c.User, boolInt(c.Staged), c.Sealed, CommandPending, ms(s.now()))
	if err != nil {
		return fmt.Errorf("insert agent command: %w", err)
	}
	// The agent's held poll may be on another replica.
	return s.notifyIn(ctx, q, NotifyAgentCommands, c.AgentID)
}

// TakeAgentCommands returns the agent's unacknowledged commands, oldest
// first, and marks them sent. Sent but unacknowledged commands are sent
// again: the agent may have died before it acknowledged, and applying the
// same password twice is harmless.
func (s *Store) TakeAgentCommands(ctx context.Context, q Querier, agentID string) ([]AgentCommand, error) {
	rows, err := s.c(q).QueryContext(ctx, `UPDATE agent_commands SET state = ?, sent_at = ?
		WHERE agent_id = ? AND state IN (?, ?)
		RETURNING id, kind, user_name, staged, sealed, created_at`,
		CommandSent, ms(s.now()), agentID, CommandPending, CommandSent)
	if err != nil {
		return nil, fmt.Errorf("take agent commands: %w", err)
	}
	defer rows.Close()
	var out []AgentCommand
	for rows.Next() {
		c := AgentCommand{AgentID: agentID, State: CommandSent}
		var staged int
		var created int64
		if err := rows.Scan(&c.ID, &c.Kind, &c.User, &staged, &c.Sealed, &created); err != nil {
			return nil, fmt.Errorf("take agent commands: %w", err)
		}
		c.Staged, c.CreatedAt = staged == 1, fromMS(created)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("take agent commands: %w", err)
	}
	// RETURNING gives no order; the agent applies them oldest first.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].CreatedAt.Before(out[j-1].CreatedAt); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// HasAgentCommands reports whether the agent has unacknowledged commands.
func (s *Store) HasAgentCommands(ctx context.Context, q Querier, agentID string) (bool, error) {
	var n int
	err := s.c(q).QueryRowContext(ctx, `SELECT count(*) FROM agent_commands WHERE agent_id = ? AND state IN (?, ?)`,
		agentID, CommandPending, CommandSent).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("agent commands: %w", err)
	}
	return n > 0, nil
}

// AckAgentCommand records a sent command's result and deletes its sealed
// password. It returns ErrNotFound for a command of another agent, one not
// sent yet, or one superseded or acknowledged meanwhile.
func (s *Store) AckAgentCommand(ctx context.Context, q Querier, agentID, id, result string, exitCode int, msg string) error {
	query := `UPDATE agent_commands SET state = ?, exit_code = ?, message = ?, sealed = NULL,
		acked_at = ? WHERE id = ? AND agent_id = ? AND state = ?`
	if s.dialect == Postgres {
		// The replica waiting for the answer (SetPassword) may be another
		// one: it is woken in the same statement, so only by a real ack.
		query = `WITH acked AS (` + query + ` RETURNING id)
			SELECT pg_notify('` + NotifyAgentAcks + `', id) FROM acked`
	}
	res, err := s.c(q).ExecContext(ctx, query, result, exitCode, msg, ms(s.now()), id, agentID, CommandSent)
	if err != nil {
		return fmt.Errorf("ack agent command: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("agent command %q: %w", id, ErrNotFound)
	}
	return nil
}

// GetAgentCommand reads a command's state and result (not its secret).
func (s *Store) GetAgentCommand(ctx context.Context, q Querier, id string) (AgentCommand, error) {
	c := AgentCommand{ID: id}
	var staged int
	var created int64
	err := s.c(q).QueryRowContext(ctx, `SELECT agent_id, kind, user_name, staged, state, exit_code, message, created_at
		FROM agent_commands WHERE id = ?`, id).Scan(&c.AgentID, &c.Kind, &c.User, &staged, &c.State, &c.ExitCode, &c.Message, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("agent command %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("get agent command: %w", err)
	}
	c.Staged, c.CreatedAt = staged == 1, fromMS(created)
	return c, nil
}

// DeleteAgentCommand drops a command that was not acknowledged (its caller
// gave up); an acknowledged one is kept as a record.
func (s *Store) DeleteAgentCommand(ctx context.Context, q Querier, id string) error {
	query := `DELETE FROM agent_commands WHERE id = ? AND state IN (?, ?)`
	if s.dialect == Postgres {
		// A poll holding the dropped command's wake-up re-reads.
		query = `WITH dropped AS (` + query + ` RETURNING agent_id)
			SELECT pg_notify('` + NotifyAgentCommands + `', agent_id) FROM dropped`
	}
	_, err := s.c(q).ExecContext(ctx, query, id, CommandPending, CommandSent)
	if err != nil {
		return fmt.Errorf("delete agent command: %w", err)
	}
	return nil
}

// AgentNotReady clears the agent's readiness: it counts as alive again
// only once it has polled as ready, after taking what waits for it.
func (s *Store) AgentNotReady(ctx context.Context, q Querier, id string) error {
	if _, err := s.c(q).ExecContext(ctx, `UPDATE agents SET ready = 0 WHERE id = ?`, id); err != nil {
		return fmt.Errorf("agent not ready: %w", err)
	}
	return nil
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// Wake-up channels: PostgreSQL NOTIFY channels by which one replica tells
// the others that a row they may wait for was committed. A notification
// carries no data beyond a key: its receiver reads the database, the one
// source of truth, so a lost or duplicated notification costs latency,
// never correctness.
const (
	// NotifyEvents: the event log grew (no payload).
	NotifyEvents = "fleetpass_events"
	// NotifyAgentCommands: commands for an agent were stored or dropped
	// (payload: the agent id).
	NotifyAgentCommands = "fleetpass_agent_cmd"
	// NotifyAgentAcks: an agent acknowledged a command (payload: the
	// command id).
	NotifyAgentAcks = "fleetpass_agent_ack"
)

var notifyChannels = []string{NotifyEvents, NotifyAgentCommands, NotifyAgentAcks, HostsChannel}

// WakeAll is the payload handlers get after the listener (re)connected:
// notifications sent while it was not listening are lost, so every waiter
// must read the database again.
const WakeAll = ""

// eventNotifyGap is the least time between two event notifications this
// replica sends. A NOTIFY takes a database-wide lock at commit, and one in
// every event-writing transaction costs a quarter to more than half of
// the write throughput; readers batch their reads anyway (events.Bus).
const eventNotifyGap = 10 * time.Millisecond

// notifier is the store's share of the wake-ups: the handlers of received
// notifications, and the coalescing sender of event notifications.
type notifier struct {
	mu       sync.Mutex
	handlers map[string][]func(payload string)

	// txEvents holds the open transactions that inserted events: the
	// notification follows their commit.
	txEvents sync.Map // *sql.Tx -> struct{}

	sendMu            sync.Mutex
	sending, pending  bool
	sent, sendFailure atomic.Int64
	received          atomic.Int64
	listening         atomic.Bool
}

// OnNotify registers fn to be called with the payload of every
// notification on channel (one of the Notify constants) that this
// replica's listener receives, its own included, and with WakeAll after
// each (re)connection of the listener. fn must not block. On SQLite
// nothing is ever sent: the in-process wake-ups of one process suffice.
func (s *Store) OnNotify(channel string, fn func(payload string)) {
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	if s.notify.handlers == nil {
		s.notify.handlers = make(map[string][]func(string))
	}
	s.notify.handlers[channel] = append(s.notify.handlers[channel], fn)
}

func (n *notifier) dispatch(channel, payload string) {
	n.mu.Lock()
	hs := n.handlers[channel]
	n.mu.Unlock()
	for _, fn := range hs {
		fn(payload)
	}
}

func (n *notifier) wakeAll() {
	for _, ch := range notifyChannels {
		n.dispatch(ch, WakeAll)
	}
}

// NotifyStats are the listener's counters (metrics, benchmarks).
type NotifyStats struct {
	Listening bool
	// Sent counts the event notifications sent, Failed those that could
	// not be sent; Received every notification received.
	Sent, Failed, Received int64
}

// NotifyStats reports the listener's state.
func (s *Store) NotifyStats() NotifyStats {
	n := &s.notify
	return NotifyStats{Listening: n.listening.Load(), Sent: n.sent.Load(), Failed: n.sendFailure.Load(),
		Received: n.received.Load()}
}

// Listen receives the wake-up notifications of every replica and hands
// them to the OnNotify handlers, until ctx ends. It reconnects with
// backoff after a lost connection, and wakes every handler after each
// connection (a catch-up). On SQLite it returns at once.
func (s *Store) Listen(ctx context.Context, log *slog.Logger) {
	if s.dialect != Postgres || s.listen == nil {
		return
	}
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		connected, err := s.listenOnce(ctx)
		s.notify.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = minBackoff
		}
		log.Warn("database notifications interrupted; reconnecting (waiters fall back to their periodic checks meanwhile)",
			"err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// listenPing is how often an idle listener checks its connection: a
// connection cut without a reset would otherwise wait forever.
const listenPing = 30 * time.Second

func (s *Store) listenOnce(ctx context.Context) (connected bool, err error) {
	cfg := s.listen.Config().ConnConfig.Copy()
	// A wait that times out only sets a deadline on the socket (the
	// default also sends the server a cancel request), and a timeout
	// leaves the connection usable: the ping below needs both.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	for _, ch := range notifyChannels {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, err
		}
	}
	s.notify.listening.Store(true)
	// Whatever was committed before LISTEN took effect announced itself
	// to nobody here: every waiter reads again.
	s.notify.wakeAll()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
				return true, err
			}
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			err = conn.Ping(pctx)
			pcancel()
			if err != nil {
				return true, err
			}
			continue
		}
		s.notify.received.Add(1)
		s.notify.dispatch(n.Channel, n.Payload)
	}
}

// notifyIn sends a notification in q's transaction (delivered when it
// commits, in commit order; never if it rolls back). Nothing on SQLite.
func (s *Store) notifyIn(ctx context.Context, q Querier, channel, payload string) error {
	if s.dialect != Postgres {
		return nil
	}
	if _, err := s.c(q).ExecContext(ctx, `SELECT pg_notify(?, ?)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// eventWritten records that q inserted an event. The event notification
// is sent after the commit rather than in the transaction, because it is
// rate-limited: a notification sent in an earlier transaction that
// commits before this one would wake readers too early, and this one's
// would be suppressed, leaving its event to the readers' slow poll.
func (s *Store) eventWritten(q Querier) {
	if s.dialect != Postgres {
		return
	}
	if tx, ok := q.(*sql.Tx); ok {
		s.notify.txEvents.Store(tx, struct{}{})
		return
	}
	s.signalEvents() // an autocommit insert: committed already
}

// txEnded is told by inTxOpts that tx ended, committed or not.
func (s *Store) txEnded(tx *sql.Tx, committed bool) {
	if s.dialect != Postgres {
		return
	}
	if _, ok := s.notify.txEvents.LoadAndDelete(tx); ok && committed {
		s.signalEvents()
	}
}

// signalEvents sends an event notification now, or, if one was sent less
// than eventNotifyGap ago, once that gap has passed: never two within the
// gap, and never one fewer than needed to announce the latest commit.
func (s *Store) signalEvents() {
	n := &s.notify
	n.sendMu.Lock()
	if n.sending {
		n.pending = true
		n.sendMu.Unlock()
		return
	}
	n.sending = true
	n.sendMu.Unlock()
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.DB.ExecContext(ctx, `SELECT pg_notify($1, '')`, NotifyEvents)
			cancel()
			if err != nil {
				// Readers still poll; a closed store ends here too.
				n.sendFailure.Add(1)
			} else {
				n.sent.Add(1)
			}
			time.Sleep(eventNotifyGap)
			n.sendMu.Lock()
			if !n.pending || errors.Is(err, sql.ErrConnDone) || s.closed.Load() {
				n.sending, n.pending = false, false
				n.sendMu.Unlock()
				return
			}
			n.pending = false
			n.sendMu.Unlock()
		}
	}()
}

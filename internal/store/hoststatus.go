package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// HostStatus is what the owner of a libvirt host last saw of its
// connection: one row per host, written by the owner alone (fenced by its
// lease), read by every replica.
type HostStatus struct {
	HostID string
	// Owner is the replica that wrote the row, in its lease's Epoch.
	Owner          string
	Epoch          int64
	Connected      bool
	Error          string
	LibvirtVersion string
	// Since is when the connection was last established or lost.
	Since     time.Time
	UpdatedAt time.Time
	// Current tells whether Owner still holds the host's lease in Epoch
	// (read back only): when not, nobody follows the host right now and
	// the row tells what was last seen.
	Current bool
}

// PutHostStatus records a host's connection state as seen by the holder of
// its lease l, in one transaction with CheckLease: a replica whose lease
// passed to another cannot overwrite the new owner's view. It fails with
// ErrLeaseLost then.
func (s *Store) PutHostStatus(ctx context.Context, l Lease, st HostStatus) error {
	return s.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.CheckLease(ctx, tx, l); err != nil {
			return err
		}
		_, err := s.c(tx).ExecContext(ctx, `INSERT INTO host_status
			(host_id, owner, epoch, connected, error, libvirt_version, since, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (host_id) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch,
				connected = excluded.connected, error = excluded.error, libvirt_version = excluded.libvirt_version,
				since = excluded.since, updated_at = excluded.updated_at`,
			st.HostID, l.Holder, l.Epoch, boolInt(st.Connected), st.Error, st.LibvirtVersion, ms(st.Since), ms(s.now()))
		if err != nil {
			return fmt.Errorf("put host status %s: %w", st.HostID, err)
		}
		return nil
	})
}

// hostStatusJoin is the FROM clause fragment joining a host (alias hosts)
// to its status and to whether its writer's lease still runs.
func (s *Store) hostStatusJoin() string {
	return s.withNow(` LEFT JOIN host_status hs ON hs.host_id = hosts.id
		LEFT JOIN leases hl ON hl.name = 'host:' || hosts.id AND hl.holder = hs.owner AND hl.epoch = hs.epoch
			AND hl.expires_at > {now}`)
}

const hostStatusColumns = `hs.owner, hs.epoch, hs.connected, hs.error, hs.libvirt_version, hs.since, hs.updated_at,
	hl.name IS NOT NULL`

// hostStatusScan holds a joined status row's nullable columns.
type hostStatusScan struct {
	owner, errText, version sql.NullString
	epoch, connected        sql.NullInt64
	since, updated          sql.NullInt64
	current                 bool
}

func (h *hostStatusScan) dest() []any {
	return []any{&h.owner, &h.epoch, &h.connected, &h.errText, &h.version, &h.since, &h.updated, &h.current}
}

func (h *hostStatusScan) status(hostID string) (HostStatus, bool) {
	if !h.owner.Valid {
		return HostStatus{HostID: hostID}, false
	}
	return HostStatus{HostID: hostID, Owner: h.owner.String, Epoch: h.epoch.Int64, Connected: h.connected.Int64 != 0,
		Error: h.errText.String, LibvirtVersion: h.version.String, Since: fromMS(h.since.Int64),
		UpdatedAt: fromMS(h.updated.Int64), Current: h.current}, true
}

// GetHostStatus reads a host's status; ErrNotFound while no owner wrote
// one.
func (s *Store) GetHostStatus(ctx context.Context, hostID string) (HostStatus, error) {
	var sc hostStatusScan
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT `+hostStatusColumns+` FROM hosts`+s.hostStatusJoin()+`
		WHERE hosts.id = ?`, hostID).Scan(sc.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return HostStatus{}, fmt.Errorf("host %q: %w", hostID, ErrNotFound)
	}
	if err != nil {
		return HostStatus{}, fmt.Errorf("get host status: %w", err)
	}
	st, ok := sc.status(hostID)
	if !ok {
		return st, fmt.Errorf("status of host %q: %w", hostID, ErrNotFound)
	}
	return st, nil
}

// ListHostStatuses reads every host's status that an owner wrote, by host
// id.
func (s *Store) ListHostStatuses(ctx context.Context) (map[string]HostStatus, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT hosts.id, `+hostStatusColumns+` FROM hosts`+s.hostStatusJoin()+`
		WHERE hs.host_id IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("list host statuses: %w", err)
	}
	defer rows.Close()
	out := map[string]HostStatus{}
	for rows.Next() {
		var id string
		var sc hostStatusScan
		if err := rows.Scan(append([]any{&id}, sc.dest()...)...); err != nil {
			return nil, fmt.Errorf("list host statuses: %w", err)
		}
		out[id], _ = sc.status(id)
	}
	return out, rows.Err()
}

// HostsChannel is the PostgreSQL notification channel on which the
// transactions that add or remove a host announce it (payload: the host's
// id), so that every replica updates its set of hosts at once rather than
// at its next periodic pass.
const HostsChannel = "fleetpass_hosts"

// notifyHosts sends HostsChannel's notification, delivered when q's
// transaction commits. SQLite has one process: nobody to tell.
func (s *Store) notifyHosts(ctx context.Context, q Querier, hostID string) error {
	return s.notifyIn(ctx, q, HostsChannel, hostID)
}

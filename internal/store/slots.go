package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// lockHostSlots is the lockKey namespace of a host's slots. It is set
// apart from the namespaces of dialect.go so that no other change to that
// list can give two locks one key.
const lockHostSlots int32 = 1301

// SlotRequest asks for one of a host's concurrency slots.
type SlotRequest struct {
	// HostKey names the slots ("libvirt/<host id>", as the engine groups
	// machines); HostID is the hosts row whose max_concurrency bounds
	// them, DefaultLimit the bound when the row has none or is gone.
	HostKey, HostID string
	DefaultLimit    int
	// Holder is the execution's item ("<operation>/<instance>"): a new
	// execution of the same item (after a crash of its replica) takes
	// over its slot instead of waiting for it to expire.
	Holder, Replica string
	TTL             time.Duration
}

// AcquireHostSlot takes a slot of the host for the holder, in one
// transaction under the host's slot lock: expired slots are reaped
// first, the holder's own slot is renewed, and otherwise a slot is taken
// if fewer than the host's max_concurrency are held. It reports false
// when all are busy. The bound is read from the hosts row each time, so a
// changed limit holds on every replica at once.
func (s *Store) AcquireHostSlot(ctx context.Context, r SlotRequest) (bool, error) {
	var got bool
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		got = false
		if err := s.lockKey(ctx, tx, lockHostSlots, r.HostKey); err != nil {
			return err
		}
		now := ms(s.now())
		if _, err := s.c(tx).ExecContext(ctx, `DELETE FROM host_slots WHERE host_key = ? AND expires_at < ?`, r.HostKey, now); err != nil {
			return err
		}
		expires := now + r.TTL.Milliseconds()
		res, err := s.c(tx).ExecContext(ctx, `UPDATE host_slots SET replica = ?, expires_at = ? WHERE host_key = ? AND holder = ?`,
			r.Replica, expires, r.HostKey, r.Holder)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			got = true
			return nil
		}
		limit := r.DefaultLimit
		var hostLimit int
		err = s.c(tx).QueryRowContext(ctx, `SELECT max_concurrency FROM hosts WHERE id = ?`, r.HostID).Scan(&hostLimit)
		switch {
		case err == nil && hostLimit > 0:
			limit = hostLimit
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		}
		var held int
		if err := s.c(tx).QueryRowContext(ctx, `SELECT count(*) FROM host_slots WHERE host_key = ?`, r.HostKey).Scan(&held); err != nil {
			return err
		}
		if held >= max(limit, 1) {
			return nil
		}
		if _, err := s.c(tx).ExecContext(ctx, `INSERT INTO host_slots (host_key, holder, replica, expires_at) VALUES (?, ?, ?, ?)`,
			r.HostKey, r.Holder, r.Replica, expires); err != nil {
			return err
		}
		got = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("host slot %s: %w", r.HostKey, err)
	}
	return got, nil
}

// RenewHostSlot extends the holder's slot by ttl; it reports false when
// the slot is gone (expired and reaped, or taken over by a newer
// execution of the same item on another replica).
func (s *Store) RenewHostSlot(ctx context.Context, hostKey, holder, replica string, ttl time.Duration) (bool, error) {
	res, err := s.c(s.DB).ExecContext(ctx, `UPDATE host_slots SET expires_at = ? WHERE host_key = ? AND holder = ? AND replica = ?`,
		ms(s.now())+ttl.Milliseconds(), hostKey, holder, replica)
	if err != nil {
		return false, fmt.Errorf("renew host slot %s: %w", hostKey, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// ReleaseHostSlot frees the holder's slot (only if this replica still
// holds it).
func (s *Store) ReleaseHostSlot(ctx context.Context, hostKey, holder, replica string) error {
	if _, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM host_slots WHERE host_key = ? AND holder = ? AND replica = ?`,
		hostKey, holder, replica); err != nil {
		return fmt.Errorf("release host slot %s: %w", hostKey, err)
	}
	return nil
}

// HostSlotsHeld counts the unexpired slots of a host.
func (s *Store) HostSlotsHeld(ctx context.Context, hostKey string) (int, error) {
	var n int
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT count(*) FROM host_slots WHERE host_key = ? AND expires_at >= ?`,
		hostKey, ms(s.now())).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("host slots %s: %w", hostKey, err)
	}
	return n, nil
}

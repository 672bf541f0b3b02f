package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// Which link of an instance a conflict or a lookup is about.
const (
	LinkPower = "power"
	LinkGuest = "guest"
)

// LinkConflict is the ErrConflict of an instance whose power or guest link
// another instance holds already (one machine has one record).
type LinkConflict struct{ Link string }

func (e *LinkConflict) Error() string { return e.Link + " link already in use" }

// Is makes errors.Is(err, ErrConflict) hold.
func (e *LinkConflict) Is(target error) bool { return target == ErrConflict }

// linkConflict reads which unique index a failed insert or update broke:
// SQLite names the columns, PostgreSQL the index.
func linkConflict(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "instances.power_driver") || strings.Contains(msg, "instances_power_link"):
		return &LinkConflict{Link: LinkPower}
	case strings.Contains(msg, "instances.guest_driver") || strings.Contains(msg, "instances_guest_link"):
		return &LinkConflict{Link: LinkGuest}
	}
	return nil
}

// duplicateLinks describes the links that two or more instances share, for
// the message of a migration that cannot make links unique.
func (s *Store) duplicateLinks(ctx context.Context) ([]string, error) {
	var out []string
	agg := "group_concat"
	if s.dialect == Postgres {
		agg = "string_agg"
	}
	for _, col := range []string{"power", "guest"} {
		rows, err := s.DB.QueryContext(ctx, `SELECT `+col+`_driver, `+col+`_host, `+col+`_address, `+agg+`(id || ' (tenant ' || tenant_id || ')', ', ')
			FROM instances GROUP BY `+col+`_driver, `+col+`_host, `+col+`_address HAVING count(*) > 1`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var d, h, a, ids string
			if err := rows.Scan(&d, &h, &a, &ids); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, fmt.Sprintf("%s link %s/%s/%s is shared by %s", col, d, h, a, ids))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// explainMigration turns the failure of the unique-links migration on a
// database with duplicate records into a message an operator can act on.
func (s *Store) explainMigration(ctx context.Context, err error) error {
	if !strings.Contains(err.Error(), "UNIQUE") && !strings.Contains(err.Error(), "unique") {
		return err
	}
	dups, derr := s.duplicateLinks(ctx)
	if derr != nil || len(dups) == 0 {
		return err
	}
	return fmt.Errorf("migrate: this database holds several instances of one machine, which this version refuses "+
		"(a tenant could reach another's machine through a copy of its link): %s; delete the copies that are not the "+
		"machine's rightful record (fleetpass instances delete ID, with the previous version) and start again: %w",
		strings.Join(dups, "; "), err)
}

// ---- enrolment tokens

// AgentTokenState is an enrolment token as listed (never the token).
type AgentTokenState struct {
	AgentToken
	UsedAt, RevokedAt *time.Time
	AgentID           string
}

// ListAgentTokens lists the enrolment tokens of tenant (all when empty),
// newest first.
func (s *Store) ListAgentTokens(ctx context.Context, tenant string) ([]AgentTokenState, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT id, tenant_id, instance_name, created_by, created_at, expires_at,
		used_at, revoked_at, COALESCE(agent_id, '') FROM agent_tokens WHERE (? = '' OR tenant_id = ?)
		ORDER BY created_at DESC, id LIMIT 1000`, tenant, tenant)
	if err != nil {
		return nil, fmt.Errorf("list agent tokens: %w", err)
	}
	defer rows.Close()
	out := []AgentTokenState{}
	for rows.Next() {
		var t AgentTokenState
		var created, expires int64
		var used, revoked sql.NullInt64
		if err := rows.Scan(&t.ID, &t.Tenant, &t.InstanceName, &t.CreatedBy, &created, &expires, &used, &revoked, &t.AgentID); err != nil {
			return nil, fmt.Errorf("list agent tokens: %w", err)
		}
		t.CreatedAt, t.ExpiresAt = fromMS(created), fromMS(expires)
		t.UsedAt, t.RevokedAt = fromNullMS(used), fromNullMS(revoked)
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAgentToken revokes an unused, unrevoked token of tenant (any tenant
// when empty) and returns its tenant; ErrNotFound otherwise.
func (s *Store) RevokeAgentToken(ctx context.Context, q Querier, tenant, id string) (string, error) {
	var owner string
	err := s.c(q).QueryRowContext(ctx, `UPDATE agent_tokens SET revoked_at = ? WHERE id = ? AND (? = '' OR tenant_id = ?)
		AND used_at IS NULL AND revoked_at IS NULL RETURNING tenant_id`, ms(s.now()), id, tenant, tenant).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("agent token %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("revoke agent token: %w", err)
	}
	return owner, nil
}

// ---- console sign-in attempts

// SignInAttempt is one subject's count after an attempt was counted.
type SignInAttempt struct {
	// Counted tells whether this attempt was counted: it was not, and is
	// to be refused, when the subject was locked.
	Counted bool
	// Failures counts the attempts in the window, this one included.
	Failures    int
	LockedUntil time.Time
	LastFailure time.Time
}

// CountSignInAttempt counts an attempt against subject before its password
// is checked, in one statement, so parallel attempts cannot all read the
// same old count: the attempt counts as a failure until a success clears
// it. A count whose window began more than window ago starts again.
// Subjects already locked are not counted again (the caller refuses them
// without looking at the password); lockAt, if above zero, locks the
// subject for lockFor when the count reaches it.
func (s *Store) CountSignInAttempt(ctx context.Context, q Querier, subject string, now time.Time, window time.Duration,
	lockAt int, lockFor time.Duration) (SignInAttempt, error) {
	var a SignInAttempt
	var locked, last int64
	n, w := ms(now), ms(now.Add(-window))
	lockUntil := ms(now.Add(lockFor))
	if lockAt <= 0 {
		lockAt, lockUntil = 1<<30, 0
	}
	mark := attemptMark()
	var got string
	err := s.c(q).QueryRowContext(ctx, `INSERT INTO console_signin_failures (subject, failures, window_start, locked_until, last_failure_at, last_attempt)
		VALUES (?, 1, CAST(? AS BIGINT), CASE WHEN 1 >= CAST(? AS BIGINT) THEN CAST(? AS BIGINT) ELSE 0 END, CAST(? AS BIGINT), ?)
		ON CONFLICT (subject) DO UPDATE SET
		failures = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.failures
			WHEN console_signin_failures.window_start < CAST(? AS BIGINT) THEN 1 ELSE console_signin_failures.failures + 1 END,
		window_start = CASE WHEN console_signin_failures.locked_until <= CAST(? AS BIGINT) AND console_signin_failures.window_start < CAST(? AS BIGINT) THEN CAST(? AS BIGINT)
			ELSE console_signin_failures.window_start END,
		locked_until = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.locked_until
			WHEN (CASE WHEN console_signin_failures.window_start < CAST(? AS BIGINT) THEN 1 ELSE console_signin_failures.failures + 1 END) >= CAST(? AS BIGINT) THEN CAST(? AS BIGINT)
			ELSE 0 END,
		last_failure_at = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.last_failure_at ELSE CAST(? AS BIGINT) END,
		last_attempt = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.last_attempt ELSE ? END
		RETURNING failures, locked_until, last_failure_at, last_attempt`,
		subject, n, lockAt, lockUntil, n, mark,
		n, w,
		n, w, n,
		n, w, lockAt, lockUntil,
		n, n, n, mark).Scan(&a.Failures, &locked, &last, &got)
	if err != nil {
		return a, fmt.Errorf("count sign-in attempt: %w", err)
	}
	a.LockedUntil, a.LastFailure, a.Counted = fromMS(locked), fromMS(last), got == mark
	return a, nil
}

// CountTenantInstances counts a tenant's instances within q (a transaction
// that is about to add some).
func (s *Store) CountTenantInstances(ctx context.Context, q Querier, tenant string) (int, error) {
	var n int
	if err := s.c(q).QueryRowContext(ctx, `SELECT count(*) FROM instances WHERE tenant_id = ?`, tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("count instances: %w", err)
	}
	return n, nil
}

// agentInstance reads the instance and tenant of an agent within q.
func (s *Store) agentInstance(ctx context.Context, q Querier, agentID string) (instanceID, tenant string, err error) {
	err = s.c(q).QueryRowContext(ctx, `SELECT instance_id, tenant_id FROM agents WHERE id = ?`, agentID).Scan(&instanceID, &tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", fmt.Errorf("agent %q: %w", agentID, ErrNotFound)
	}
	return instanceID, tenant, err
}

// LinkDrivers names the drivers whose links name a record of the store,
// which LinkOwnerProblem checks is the instance's own.
type LinkDrivers struct {
	// Host's links name a registered host (libvirt).
	Host string
	// Agent's links name an enrolled agent.
	Agent string
	// BMC's power links name a BMC whose credentials are registered for
	// the instance (ipmi).
	BMC string
}

// LinkOwnerProblem checks, at the moment a driver is to act on an
// instance's links, that they are the instance's own: no other instance
// holds either link, a link to a registered host (libvirt) names a host of
// the instance's tenant, a link to an enrolled agent names the agent of
// this instance, and a BMC power link (ipmi) names a BMC registered for
// this instance (its credentials are the instance's, sealed to it). It
// returns a description of the first problem, or "". The API refuses such
// records already; this is the second line.
func (s *Store) LinkOwnerProblem(ctx context.Context, q Querier, in apiv1.Instance, d LinkDrivers) (string, error) {
	held, err := s.linkHolding(ctx, q, in)
	if err != nil {
		return "", err
	}
	return s.LinkProblem(ctx, q, in, held, d)
}

// LinkHolding is how many instances hold an instance's power and guest
// links, and whether the instance itself is among them: a link is the
// instance's alone when it holds it and nobody else does.
type LinkHolding struct {
	Power, Guest       int
	OwnPower, OwnGuest bool
}

// The conditions that an address is not empty repeat the guest index's
// own: without them SQLite cannot use that partial index and scans every
// instance, on every execution of every item.
const (
	powerHolders = `SELECT count(*) FROM instances WHERE power_driver = ? AND power_host = ? AND power_address = ? AND power_address <> ''`
	guestHolders = `SELECT count(*) FROM instances WHERE guest_driver = ? AND guest_host = ? AND guest_address = ? AND guest_address <> ''`
)

// linkHolding counts the holders of in's links, both in one statement.
func (s *Store) linkHolding(ctx context.Context, q Querier, in apiv1.Instance) (LinkHolding, error) {
	var h LinkHolding
	var ownPower, ownGuest int
	p, g := in.Power, in.Guest
	err := s.c(q).QueryRowContext(ctx, `SELECT (`+powerHolders+`), (`+powerHolders+` AND id = ?), (`+guestHolders+`), (`+guestHolders+` AND id = ?)`,
		p.Driver, p.Host, p.Address, p.Driver, p.Host, p.Address, in.ID,
		g.Driver, g.Host, g.Address, g.Driver, g.Host, g.Address, in.ID).Scan(&h.Power, &ownPower, &h.Guest, &ownGuest)
	if err != nil {
		return h, fmt.Errorf("link holders: %w", err)
	}
	h.OwnPower, h.OwnGuest = ownPower > 0, ownGuest > 0
	return h, nil
}

// GetInstanceForWork reads an instance and who holds its links, in one
// statement: what the engine reads before it acts on the instance's
// machine (LinkProblem checks the holding).
func (s *Store) GetInstanceForWork(ctx context.Context, q Querier, id string) (apiv1.Instance, LinkHolding, error) {
	var h LinkHolding
	in, err := scanInstance(withCounts{s.c(q).QueryRowContext(ctx, `SELECT `+instanceForWork+`
		FROM instances i WHERE i.id = ?`, id), &h.Power, &h.Guest})
	if errors.Is(err, sql.ErrNoRows) {
		return in, h, fmt.Errorf("instance %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return in, h, fmt.Errorf("get instance: %w", err)
	}
	ownLinks(in, &h)
	return in, h, nil
}

// instanceForWork is what GetInstanceForWork reads of instance i: its
// columns, then how many instances hold its power link and its guest link.
var instanceForWork = qualify("i", instanceColumns) + `,
	(SELECT count(*) FROM instances p WHERE p.power_driver = i.power_driver AND p.power_host = i.power_host
		AND p.power_address = i.power_address AND p.power_address <> ''),
	(SELECT count(*) FROM instances g WHERE g.guest_driver = i.guest_driver AND g.guest_host = i.guest_host
		AND g.guest_address = i.guest_address AND g.guest_address <> '')`

// qualify names each of the columns cols as one of table's.
func qualify(table, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = table + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// ownLinks completes h for in: the counts are of the very row read, which
// holds its own links.
func ownLinks(in apiv1.Instance, h *LinkHolding) {
	h.OwnPower, h.OwnGuest = in.Power.Address != "", in.Guest.Address != ""
}

// withCounts scans a row's last two columns into a and b after the ones
// its caller asks for.
type withCounts struct {
	row  interface{ Scan(...any) error }
	a, b *int
}

func (w withCounts) Scan(dest ...any) error { return w.row.Scan(append(dest, w.a, w.b)...) }

// LinkProblem is LinkOwnerProblem with the holding of in's links already
// read (GetInstanceForWork).
func (s *Store) LinkProblem(ctx context.Context, q Querier, in apiv1.Instance, held LinkHolding, d LinkDrivers) (string, error) {
	hostDriver, agentDriver := d.Host, d.Agent
	for _, which := range []string{LinkPower, LinkGuest} {
		link, holders, own := in.Power, held.Power, held.OwnPower
		if which == LinkGuest {
			link, holders, own = in.Guest, held.Guest, held.OwnGuest
		}
		if link.Address == "" {
			// No link yet: a bare-metal server whose agent has not
			// enrolled. Its channel says so itself.
			continue
		}
		if holders != 1 || !own {
			return fmt.Sprintf("the %s link of the instance is not its alone", which), nil
		}
		switch link.Driver {
		case hostDriver:
			h, err := s.GetHost(ctx, q, link.Host)
			if errors.Is(err, ErrNotFound) {
				return fmt.Sprintf("the %s link names no registered host", which), nil
			}
			if err != nil {
				return "", err
			}
			if h.Tenant != in.Tenant {
				return fmt.Sprintf("the %s link names a host of another tenant", which), nil
			}
		case agentDriver:
			owner, tenant, err := s.agentInstance(ctx, q, link.Address)
			if errors.Is(err, ErrNotFound) {
				continue // not enrolled yet, or gone: the channel says so itself
			}
			if err != nil {
				return "", err
			}
			if owner != in.ID || tenant != in.Tenant {
				return fmt.Sprintf("the %s link names the agent of another instance", which), nil
			}
		case d.BMC:
			if which != LinkPower {
				return fmt.Sprintf("the %s link names a BMC, which only powers a server", which), nil
			}
			_, err := s.GetBMC(ctx, q, in.ID)
			if errors.Is(err, ErrNotFound) {
				return "the power link names a BMC not registered for the instance", nil
			}
			if err != nil {
				return "", err
			}
		}
	}
	return "", nil
}

// attemptMark is a random mark a counted attempt leaves, to read back.
func attemptMark() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CountSignInDelayed counts an attempt like CountSignInAttempt, but past
// slowAfter failures each counted attempt closes the subject for a delay
// that doubles from two seconds up to maxDelay, instead of a fixed lock:
// the subject is slowed down, never shut.
func (s *Store) CountSignInDelayed(ctx context.Context, q Querier, subject string, now time.Time, window time.Duration,
	slowAfter int, maxDelay time.Duration) (SignInAttempt, error) {
	var a SignInAttempt
	var locked, last int64
	n, w, maxMS := ms(now), ms(now.Add(-window)), maxDelay.Milliseconds()
	mark := attemptMark()
	var got string
	// next is the count after this attempt, when it is counted.
	const next = `(CASE WHEN console_signin_failures.window_start < ? THEN 1 ELSE console_signin_failures.failures + 1 END)`
	err := s.c(q).QueryRowContext(ctx, `INSERT INTO console_signin_failures (subject, failures, window_start, locked_until, last_failure_at, last_attempt)
		VALUES (?, 1, CAST(? AS BIGINT), 0, CAST(? AS BIGINT), ?)
		ON CONFLICT (subject) DO UPDATE SET
		failures = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.failures ELSE `+next+` END,
		window_start = CASE WHEN console_signin_failures.locked_until <= CAST(? AS BIGINT) AND console_signin_failures.window_start < CAST(? AS BIGINT) THEN CAST(? AS BIGINT)
			ELSE console_signin_failures.window_start END,
		locked_until = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.locked_until
			WHEN `+next+` <= CAST(? AS BIGINT) THEN 0
			WHEN `+next+` - CAST(? AS BIGINT) >= 16 THEN CAST(? AS BIGINT) + CAST(? AS BIGINT)
			ELSE CAST(? AS BIGINT) + (CASE WHEN 1000 * (1 << CAST(`+next+` - CAST(? AS BIGINT) AS INTEGER)) > CAST(? AS BIGINT) THEN CAST(? AS BIGINT) ELSE 1000 * (1 << CAST(`+next+` - CAST(? AS BIGINT) AS INTEGER)) END) END,
		last_failure_at = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.last_failure_at ELSE CAST(? AS BIGINT) END,
		last_attempt = CASE WHEN console_signin_failures.locked_until > CAST(? AS BIGINT) THEN console_signin_failures.last_attempt ELSE ? END
		RETURNING failures, locked_until, last_failure_at, last_attempt`,
		subject, n, n, mark,
		n, w,
		n, w, n,
		n,
		w, slowAfter,
		w, slowAfter, n, maxMS,
		n, w, slowAfter, maxMS, maxMS, w, slowAfter,
		n, n, n, mark).Scan(&a.Failures, &locked, &last, &got)
	if err != nil {
		return a, fmt.Errorf("count sign-in attempt: %w", err)
	}
	a.LockedUntil, a.LastFailure, a.Counted = fromMS(locked), fromMS(last), got == mark
	return a, nil
}

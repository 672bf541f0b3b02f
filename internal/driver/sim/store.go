package sim

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// schemaVersion is stored in PRAGMA user_version; a file of a newer version
// is refused rather than misread, an older one is brought up to date.
const schemaVersion = 2

// sqliteTable is the machine table's SQLite schema under name: the fleet
// file's machines, or sim_machines in a shared SQLite database (pgSchema
// is its PostgreSQL spelling). The defaults are those the upgrades add.
func sqliteTable(name string) string {
	return `CREATE TABLE IF NOT EXISTS ` + name + ` (
	id            TEXT PRIMARY KEY,
	os            TEXT NOT NULL,
	power         TEXT NOT NULL,
	since_ns      INTEGER NOT NULL,
	boot_ns       INTEGER NOT NULL,
	shutdown_ns   INTEGER NOT NULL,
	hang_shutdown INTEGER NOT NULL,
	agent_dead    INTEGER NOT NULL,
	transient     INTEGER NOT NULL,
	users         BLOB NOT NULL,
	busy_by       TEXT NOT NULL DEFAULT '',
	busy_until_ns INTEGER NOT NULL DEFAULT 0,
	overlap_count INTEGER NOT NULL DEFAULT 0,
	applied       INTEGER NOT NULL DEFAULT 0
) STRICT`
}

// upgrades[v] brings a file of version v+1 to version v+2.
var upgrades = []string{
	`ALTER TABLE machines ADD COLUMN busy_by TEXT NOT NULL DEFAULT '';
	 ALTER TABLE machines ADD COLUMN busy_until_ns INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE machines ADD COLUMN overlap_count INTEGER NOT NULL DEFAULT 0;
	 ALTER TABLE machines ADD COLUMN applied INTEGER NOT NULL DEFAULT 0`,
}

const machineColumns = `os, power, since_ns, boot_ns, shutdown_ns, hang_shutdown, agent_dead, transient, users, ` +
	`busy_by, busy_until_ns, overlap_count, applied`

// machineBinds are the placeholders of machineColumns.
const machineBinds = `?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`

// fileStore writes machines through to a SQLite file. Each change is one
// statement on one row, so it is atomic without an explicit transaction.
type fileStore struct {
	db     *sql.DB
	insert *sql.Stmt
	update *sql.Stmt
	delete *sql.Stmt
}

// storedUser is how a user is encoded in the users column (JSON, with
// verifiers in base64). Only verifiers are stored, never passwords.
type storedUser struct {
	Verifier []byte `json:"v,omitempty"`
	Staged   []byte `json:"s,omitempty"`
}

func openStore(ctx context.Context, path string) (_ *fileStore, _ map[string]state, err error) {
	// The path goes into a URI; rather than escape it, refuse the few
	// characters a URI would read differently.
	if path == "" || strings.ContainsAny(path, "?#%") {
		return nil, nil, fmt.Errorf("sim: open fleet file %q: empty path, or path with ?, # or %%", path)
	}
	// WAL with synchronous=NORMAL survives a killed process (what the crash
	// tests do) without an fsync per change, which the load tests could not
	// afford; only an OS crash may lose the last changes. Exclusive locking
	// keeps a second process from opening the file: the in-memory read path
	// would go stale if anyone else wrote it.
	dsn := "file:" + path +
		"?_pragma=locking_mode(EXCLUSIVE)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: open fleet file %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	// One connection: SQLite has one writer anyway, and the exclusive lock
	// belongs to a connection.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	if err := migrate(ctx, db); err != nil {
		return nil, nil, fmt.Errorf("sim: open fleet file %q: %w", path, err)
	}
	states, err := load(ctx, db)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: open fleet file %q: %w", path, err)
	}
	s := &fileStore{db: db}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.insert, `INSERT INTO machines (id, ` + machineColumns + `) VALUES (?, ` + machineBinds + `)`},
		{&s.update, `UPDATE machines SET (` + machineColumns + `) = (` + machineBinds + `) WHERE id = ?`},
		{&s.delete, `DELETE FROM machines WHERE id = ?`},
	} {
		if *p.stmt, err = db.PrepareContext(ctx, p.query); err != nil {
			return nil, nil, fmt.Errorf("sim: open fleet file %q: %w", path, err)
		}
	}
	return s, states, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	if version == schemaVersion {
		return nil
	}
	if version > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this fleetpass's %d", version, schemaVersion)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	steps := []string{sqliteTable("machines")}
	if version > 0 {
		steps = upgrades[version-1:]
	}
	for _, step := range steps {
		if _, err := tx.ExecContext(ctx, step); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

func load(ctx context.Context, db *sql.DB) (map[string]state, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, `+machineColumns+` FROM machines`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	states := make(map[string]state)
	for rows.Next() {
		id, s, err := scanMachine(rows)
		if err != nil {
			return nil, err
		}
		states[id] = s
	}
	return states, rows.Err()
}

// scanMachine reads a row of id and machineColumns, plus extra, after
// them.
func scanMachine(row interface{ Scan(...any) error }, extra ...any) (string, state, error) {
	var (
		id, os, power, busyBy         string
		since, boot, shutdown, busyNs int64
		hang, agentDead               bool
		transient, overlaps, applied  int
		usersJSON                     []byte
		stored                        map[string]storedUser
	)
	dest := append([]any{&id, &os, &power, &since, &boot, &shutdown, &hang, &agentDead, &transient, &usersJSON,
		&busyBy, &busyNs, &overlaps, &applied}, extra...)
	if err := row.Scan(dest...); err != nil {
		return "", state{}, err
	}
	if err := json.Unmarshal(usersJSON, &stored); err != nil {
		return "", state{}, fmt.Errorf("machine %q: users: %w", id, err)
	}
	users := make(map[string]user, len(stored))
	for name, u := range stored {
		users[name] = user{verifier: u.Verifier, staged: u.Staged}
	}
	s := state{
		os:       OS(os),
		power:    driver.PowerState(power),
		since:    time.Unix(0, since).UTC(),
		boot:     time.Duration(boot),
		shutdown: time.Duration(shutdown),
		faults:   Faults{HangShutdown: hang, AgentDead: agentDead, Transient: transient},
		users:    users,
		busyBy:   busyBy,
		overlaps: overlaps,
		applied:  applied,
	}
	if busyNs != 0 {
		s.busyUntil = time.Unix(0, busyNs).UTC()
	}
	return id, s, nil
}

// columns returns s's values in machineColumns order.
func columns(s state) ([]any, error) {
	stored := make(map[string]storedUser, len(s.users))
	for name, u := range s.users {
		stored[name] = storedUser{Verifier: u.verifier, Staged: u.staged}
	}
	users, err := json.Marshal(stored)
	if err != nil {
		return nil, err
	}
	var busyNs int64
	if !s.busyUntil.IsZero() {
		busyNs = s.busyUntil.UnixNano()
	}
	return []any{
		string(s.os), string(s.power), s.since.UnixNano(), int64(s.boot), int64(s.shutdown),
		s.faults.HangShutdown, s.faults.AgentDead, s.faults.Transient, users,
		s.busyBy, busyNs, s.overlaps, s.applied,
	}, nil
}

func (st *fileStore) insertMachine(ctx context.Context, id string, s state) error {
	cols, err := columns(s)
	if err != nil {
		return err
	}
	_, err = st.insert.ExecContext(ctx, append([]any{id}, cols...)...)
	return err
}

func (st *fileStore) updateMachine(ctx context.Context, id string, s state) error {
	cols, err := columns(s)
	if err != nil {
		return err
	}
	res, err := st.update.ExecContext(ctx, append(cols, id)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return errors.New("machine missing from the fleet file")
	}
	return nil
}

func (st *fileStore) deleteMachine(ctx context.Context, id string) error {
	_, err := st.delete.ExecContext(ctx, id)
	return err
}

func (st *fileStore) close() error {
	return st.db.Close()
}

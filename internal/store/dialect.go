package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// Dialect names the SQL database a Store runs on. Every query is written
// once, in SQLite's spelling with ? placeholders; the few places where the
// two databases differ ask the dialect, and nothing else does.
type Dialect string

// The databases fleetpass runs on.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Dialect is the database this store runs on.
func (s *Store) Dialect() Dialect { return s.dialect }

// rebinder rewrites ? placeholders as PostgreSQL's $1, $2, ..., once per
// query text (the store's queries are a fixed set, plus IN lists of a
// bounded number of lengths).
type rebinder struct {
	mu    sync.Mutex
	cache map[string]string
}

func (r *rebinder) rebind(q string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if out, ok := r.cache[q]; ok {
		return out
	}
	out := rebind(q)
	if r.cache == nil || len(r.cache) >= 4096 {
		r.cache = make(map[string]string)
	}
	r.cache[q] = out
	return out
}

// rebind numbers the ? placeholders of q outside string literals and
// quoted identifiers.
func rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// SQLite's extended result codes for constraint failures
// (https://sqlite.org/rescode.html).
const (
	sqliteConstraintPrimaryKey = 1555
	sqliteConstraintUnique     = 2067
	sqliteBusy                 = 5
)

// isUniqueViolation reports whether err is a unique or primary-key
// violation, on either database.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqliteConstraintUnique || se.Code() == sqliteConstraintPrimaryKey
	}
	return false
}

// IsRetryable reports whether err ended a transaction that can simply be
// run again: a PostgreSQL serialization failure or deadlock (the server
// picked this transaction as the victim), or a busy SQLite database.
func IsRetryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqliteBusy
	}
	return false
}

// containsExpr is a condition true when column contains the text of the
// next placeholder.
func (s *Store) containsExpr(column string) string {
	if s.dialect == Postgres {
		return "strpos(" + column + ", ?) > 0"
	}
	return "instr(" + column + ", ?) > 0"
}

// Lock namespaces of lockKey: the first half of PostgreSQL's two-int
// advisory lock key.
const (
	lockHost int32 = iota + 2
	lockMigrate
)

// lockKey serialises the transactions that take the same (ns, key) until
// they end. SQLite transactions are serialised already (one writer), so
// there it does nothing.
func (s *Store) lockKey(ctx context.Context, tx *sql.Tx, ns int32, key string) error {
	if s.dialect != Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, ns, key)
	return err
}

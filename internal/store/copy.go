package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// copyFirst are the tables others refer to, in an order that inserts
// every referenced row before its references; the rest follow by name.
var copyFirst = []string{"tenants", "operations", "agents", "console_users", "hosts"}

// copySkip are tables that are not fleetpass's state or that do not move:
// the schema's own bookkeeping, River's jobs (unfinished items get fresh
// jobs instead) and the event log (its ids start again on the target).
func copySkip(table string) bool {
	return table == "goose_db_version" || table == "events" || strings.HasPrefix(table, "river_") ||
		strings.HasPrefix(table, "sqlite_")
}

// CopyCounts is how many rows Copy copied, by table.
type CopyCounts map[string]int

// Copy copies every fleetpass table of the SQLite store from into the
// store to, which must hold no tenant yet, in tx (a transaction of to):
// all of it or nothing. The event log and River's jobs are not copied.
// Identities (audit ids, bare-metal task numbers) are kept, and the
// target's sequences continue after them.
func Copy(ctx context.Context, from *Store, to *Store, tx *sql.Tx) (CopyCounts, error) {
	if from.dialect != SQLite {
		return nil, fmt.Errorf("copy: the source must be a SQLite installation")
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tenants`).Scan(&n); err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	if n > 0 {
		return nil, fmt.Errorf("copy: the target database already holds %d tenant(s); copy into an empty database", n)
	}
	tables, err := from.tables(ctx)
	if err != nil {
		return nil, err
	}
	counts := CopyCounts{}
	for _, t := range tables {
		c, err := copyTable(ctx, from, to, tx, t)
		if err != nil {
			return nil, err
		}
		counts[t] = c
	}
	if to.dialect == Postgres {
		// Identity columns continue after the copied ids, so a new audit
		// line or task number never repeats an old one.
		rows, err := tx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
			WHERE table_schema = current_schema() AND is_identity = 'YES'`)
		if err != nil {
			return nil, fmt.Errorf("copy: identities: %w", err)
		}
		var ids [][2]string
		for rows.Next() {
			var t, c string
			if err := rows.Scan(&t, &c); err != nil {
				rows.Close()
				return nil, fmt.Errorf("copy: identities: %w", err)
			}
			ids = append(ids, [2]string{t, c})
		}
		rows.Close()
		for _, id := range ids {
			if copySkip(id[0]) {
				continue
			}
			q := fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'), coalesce(max(%s), 0) + 1, false) FROM %s`,
				id[0], id[1], id[1], id[0])
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return nil, fmt.Errorf("copy: identity of %s: %w", id[0], err)
			}
		}
	}
	return counts, nil
}

// tables lists the source's fleetpass tables in copy order.
func (s *Store) tables(ctx context.Context) ([]string, error) {
	rows, err := s.DB.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("copy: list tables: %w", err)
	}
	defer rows.Close()
	var rest []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("copy: list tables: %w", err)
		}
		if !copySkip(t) && !slices.Contains(copyFirst, t) {
			rest = append(rest, t)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("copy: list tables: %w", err)
	}
	return append(slices.Clone(copyFirst), rest...), nil
}

func copyTable(ctx context.Context, from, to *Store, tx *sql.Tx, table string) (int, error) {
	// Table names come from the source's catalogue, never from input.
	rows, err := from.DB.QueryContext(ctx, `SELECT * FROM "`+table+`"`)
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", table, err)
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = `"` + c + `"`
	}
	insert := `INSERT INTO "` + table + `" (` + strings.Join(quoted, ", ") + `) VALUES (` + placeholders(len(cols)) + `)`
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	n := 0
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("copy %s: %w", table, err)
		}
		if _, err := to.c(tx).ExecContext(ctx, insert, vals...); err != nil {
			return n, fmt.Errorf("copy %s: %w", table, err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("copy %s: %w", table, err)
	}
	return n, nil
}

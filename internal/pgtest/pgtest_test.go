package pgtest

import (
	"context"
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestEachTestGetsItsOwnDatabaseClonedFromTheTemplate(t *testing.T) {
	c := Shared(t)
	prepare := func(ctx context.Context, url string) error {
		return c.ExecURL(ctx, url, "CREATE TABLE marks (n int); INSERT INTO marks VALUES (7)")
	}
	a := c.FromTemplate(t, "pgtest_tpl", prepare)
	b := c.FromTemplate(t, "pgtest_tpl", prepare)
	if a == b {
		t.Fatalf("two tests got the same database %s", a)
	}
	ctx := t.Context()
	if err := c.ExecURL(ctx, a, "INSERT INTO marks VALUES (8)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.DBURL(t, b).QueryRowContext(ctx, "SELECT count(*) FROM marks").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("database b sees %d rows, want the template's 1 (a's insert leaked)", n)
	}
}

func TestRestartKeepsCommittedData(t *testing.T) {
	c := Shared(t)
	url := c.Database(t)
	ctx := t.Context()
	if err := c.ExecURL(ctx, url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.DBURL(t, url).QueryRowContext(ctx, "SELECT count(*) FROM kept").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("after a restart: %d rows, want 1", n)
	}
}

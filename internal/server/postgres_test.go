package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
)

// openPG opens a server on the PostgreSQL database url (with its own data
// directory), or returns Open's error.
func openPG(t *testing.T, url string) (*server.Server, error) {
	t.Helper()
	srv, err := server.Open(context.Background(), server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), DatabaseURL: url,
		Sim: true, Engine: servertest.FastEngine(), SyncInterval: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		t.Cleanup(func() { srv.Close() })
	}
	return srv, err
}

func TestPostgresStartupRefusesBadDatabasesClearly(t *testing.T) {
	c := pgtest.Shared(t)
	wrongPassword := "not-the-" + pgtest.PasswordUserPassword
	for _, tc := range []struct {
		name string
		url  string
		want string
	}{
		{"malformed URL", "postgres://fleetpass@localhost:notaport/db", "database URL"},
		{"nothing listening", "postgres://fleetpass@127.0.0.1:1/fleetpass?sslmode=disable&connect_timeout=5", "cannot connect to PostgreSQL at 127.0.0.1:1"},
		{"wrong password", "postgres://" + pgtest.PasswordUser + ":" + wrongPassword + "@/postgres?host=" + c.Socket, "refused the credentials"},
		{"no such database", c.URL("no_such_database"), "the database does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openPG(t, tc.url)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want an error saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), wrongPassword) {
				t.Fatalf("the error repeats the URL's password: %v", err)
			}
		})
	}
}

func TestPostgresNewerSchemaIsRefusedAndLeftAlone(t *testing.T) {
	c := pgtest.Shared(t)
	url := storetest.PostgresURL(t)
	db := c.DBURL(t, url)
	if _, err := db.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)`); err != nil {
		t.Fatal(err)
	}
	_, err := openPG(t, url)
	if !errors.Is(err, store.ErrSchemaTooNew) || !strings.Contains(err.Error(), "version 9999") {
		t.Fatalf("Open on a newer schema: %v, want ErrSchemaTooNew naming version 9999", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM goose_db_version WHERE version_id = 9999`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the newer version's row: %d (%v)", n, err)
	}
}

func TestPostgresServersStartingTogetherMigrateOnce(t *testing.T) {
	c := pgtest.Shared(t)
	url := c.Database(t) // empty: both servers find nothing migrated
	keyFile := servertest.WriteSealingKey(t, 7)
	const n = 3
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			srv, err := server.Open(context.Background(), server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), DatabaseURL: url,
				SecretKeyFile: keyFile, Engine: servertest.FastEngine(), SyncInterval: time.Hour,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				srv.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
	}
	var dup int
	err := c.DBURL(t, url).QueryRow(`SELECT count(*) FROM (SELECT version_id FROM goose_db_version
		GROUP BY version_id HAVING count(*) > 1) d`).Scan(&dup)
	if err != nil || dup != 0 {
		t.Fatalf("%d schema versions applied more than once (%v)", dup, err)
	}
}

// TestConcurrentIdenticalRequestsGiveOneOperation: two requests with one
// Idempotency-Key at the same moment (as two replicas would get them)
// make one operation; the other is its replay, never a 5xx.
func TestConcurrentIdenticalRequestsGiveOneOperation(t *testing.T) {
	e := newEnv(t, envOpts{})
	var ids []string
	for i := range 4 {
		ids = append(ids, e.addMachine(machineOpts{name: fmt.Sprint("race-", i), running: true}).ID)
	}
	for round := range 5 {
		body := apiv1.PasswordReset{InstanceIDs: ids, Mode: apiv1.ModeOnline, Generate: true}
		const n = 6
		replies := make([]reply, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				replies[i] = e.do(e.admin, "POST", "/v1/password-resets", body, "Idempotency-Key", fmt.Sprint("race-", round))
			})
		}
		close(start)
		wg.Wait()
		opIDs := map[string]bool{}
		for _, r := range replies {
			if r.status != 202 {
				t.Fatalf("round %d: status %d: %s", round, r.status, r.body)
			}
			var op apiv1.Operation
			if err := json.Unmarshal(r.body, &op); err != nil {
				t.Fatal(err)
			}
			opIDs[op.ID] = true
		}
		if len(opIDs) != 1 {
			t.Fatalf("round %d: %d operations for one idempotency key", round, len(opIDs))
		}
		for id := range opIDs {
			e.wait(e.admin, id)
		}
	}
}

// TestPostgresRestartMidBatchFinishes restarts PostgreSQL (pg_ctl restart
// -m fast) while a batch of offline resets runs: the server reconnects and
// every item ends, applied.
func TestPostgresRestartMidBatchFinishes(t *testing.T) {
	c := pgtest.Shared(t)
	e := newEnv(t, envOpts{databaseURL: storetest.PostgresURL(t)})
	const n = 20
	var ids []string
	var machines []apiv1.Instance
	for i := range n {
		in := e.addMachine(machineOpts{name: fmt.Sprint("pgr-", i), running: true, boot: 700 * time.Millisecond,
			shutdown: 700 * time.Millisecond})
		ids, machines = append(ids, in.ID), append(machines, in)
	}
	const password = "Pg-Restart-pw-4242"
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids, Mode: apiv1.ModeOffline, ForceStop: true, Password: password})
	time.Sleep(300 * time.Millisecond)
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r := e.do(e.admin, "GET", "/v1/operations/"+op.ID+"/wait?timeout=20s", nil)
		if r.status == 200 {
			if err := json.Unmarshal(r.body, &op); err != nil {
				t.Fatal(err)
			}
			if op.Status != apiv1.OperationRunning {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the batch did not finish after PostgreSQL restarted: %+v (last status %d)", op.Summary, r.status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != n {
		t.Fatalf("operation %s %+v", op.Status, op.Summary)
	}
	for _, in := range machines {
		if !e.checkPassword(in, "root", password) {
			t.Errorf("%s: the new password is not set", in.Name)
		}
	}
	e.assertNoSecret(password)
}

// TestServersOfOneDatabaseNeedTheSameKey: servers that share a database
// but not a data directory take the sealing key from --secret-key-file;
// one with another key refuses to start, even with nothing sealed yet.
func TestServersOfOneDatabaseNeedTheSameKey(t *testing.T) {
	url := storetest.DatabaseURL(t)
	open := func(dataDir, keyFile string) error {
		srv, err := server.Open(context.Background(), server.Config{Listen: "127.0.0.1:0", DataDir: dataDir, DatabaseURL: url,
			SecretKeyFile: keyFile, Engine: servertest.FastEngine(), SyncInterval: time.Hour,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			srv.Close()
		}
		return err
	}
	first, other := servertest.WriteSealingKey(t, 1), servertest.WriteSealingKey(t, 2)
	dataDir := t.TempDir()
	if err := open(dataDir, first); err != nil {
		t.Fatal(err)
	}
	if url == "" {
		// On SQLite a second server shares the data directory, not only
		// the database: the same directory, another key.
		if err := open(dataDir, other); !errors.Is(err, store.ErrKeyMismatch) || !strings.Contains(err.Error(), "--secret-key-file") {
			t.Fatalf("another key: %v, want ErrKeyMismatch naming --secret-key-file", err)
		}
		if err := open(dataDir, first); err != nil {
			t.Fatalf("the same key again: %v", err)
		}
		return
	}
	if err := open(t.TempDir(), other); !errors.Is(err, store.ErrKeyMismatch) || !strings.Contains(err.Error(), "--secret-key-file") {
		t.Fatalf("another key: %v, want ErrKeyMismatch naming --secret-key-file", err)
	}
	if err := open(t.TempDir(), first); err != nil {
		t.Fatalf("the same key from another data directory: %v", err)
	}
}

func TestSecretKeyFileMustExistAndBePrivate(t *testing.T) {
	open := func(keyFile string) error {
		srv, err := server.Open(context.Background(), server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), SecretKeyFile: keyFile,
			Engine: servertest.FastEngine(), SyncInterval: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			srv.Close()
		}
		return err
	}
	if err := open(filepath.Join(t.TempDir(), "missing.key")); err == nil || !strings.Contains(err.Error(), "key file") {
		t.Fatalf("a missing key file: %v", err)
	}
	loose := servertest.WriteSealingKey(t, 3)
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := open(loose); err == nil || !strings.Contains(err.Error(), "must be 0600") {
		t.Fatalf("a key file others can read: %v", err)
	}
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := open(short); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("a short key: %v", err)
	}
}

// TestDBCopyMovesASQLiteInstallationToPostgres copies a stopped SQLite
// installation with finished and unfinished work into PostgreSQL: the
// server started on the copy knows every tenant, key, instance, operation
// and audit line, finishes the unfinished items, and carries on numbering
// after the copied ids.
func TestDBCopyMovesASQLiteInstallationToPostgres(t *testing.T) {
	url := storetest.PostgresURL(t)
	// Graceful shutdowns hang until a forced stop at the item's deadline,
	// 5 s on: the items are still unfinished when the source stops (an
	// execution hands its wait back to River after half a second).
	cfg := servertest.FastEngine()
	cfg.ShutdownTimeout, cfg.ExecBudget = 5*time.Second, 500*time.Millisecond
	src := newEnv(t, envOpts{sqlite: true, engine: cfg})
	k := src.newKey("acme")
	done := src.addMachine(machineOpts{name: "done", running: true})
	var slow []apiv1.Instance
	for i := range 3 {
		slow = append(slow, src.addMachine(machineOpts{name: fmt.Sprint("slow-", i), running: true,
			faults: sim.Faults{HangShutdown: true}}))
	}
	first := src.wait(k, src.reset(k, apiv1.PasswordReset{InstanceIDs: []string{done.ID}, Mode: apiv1.ModeOnline,
		Password: "First-pass-111"}).ID)
	if first.Status != apiv1.OperationSucceeded {
		t.Fatalf("first reset: %+v", first)
	}
	const password = "Moved-pass-222"
	pending := src.reset(k, apiv1.PasswordReset{InstanceIDs: ids(slow...), Mode: apiv1.ModeOffline, ForceStop: true,
		Password: password})
	var audit apiv1.AuditList
	src.mustDo(src.admin, "GET", "/v1/audit?limit=500", nil, 200, &audit)
	var keys apiv1.KeyList
	src.mustDo(src.admin, "GET", "/v1/keys", nil, 200, &keys)
	src.s.Stop()

	res, err := server.CopyDatabase(context.Background(), src.dataDir, url)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != len(slow) || res.Rows["instances"] != 4 || res.Rows["operations"] != 2 {
		t.Fatalf("copied %+v", res)
	}
	if _, err := server.CopyDatabase(context.Background(), src.dataDir, url); err == nil || !strings.Contains(err.Error(), "empty database") {
		t.Fatalf("a second copy into the same database: %v", err)
	}

	dst := newEnv(t, envOpts{databaseURL: url, dataDir: src.dataDir})
	if got := dst.wait(k, pending.ID); got.Status != apiv1.OperationSucceeded || got.Summary.Succeeded != len(slow) {
		t.Fatalf("the unfinished operation after the move: %s %+v", got.Status, got.Summary)
	}
	for _, in := range slow {
		if !dst.checkPassword(in, "root", password) {
			t.Errorf("%s: the moved item did not set the password", in.Name)
		}
	}
	var op apiv1.Operation
	dst.mustDo(k, "GET", "/v1/operations/"+first.ID, nil, 200, &op)
	if op.Status != apiv1.OperationSucceeded || len(op.Items) != 1 {
		t.Fatalf("the finished operation after the move: %+v", op)
	}
	var keys2 apiv1.KeyList
	dst.mustDo(dst.admin, "GET", "/v1/keys", nil, 200, &keys2)
	if len(keys2.Keys) != len(keys.Keys) || len(keys.Keys) < 2 {
		t.Fatalf("%d keys after the move, %d before", len(keys2.Keys), len(keys.Keys))
	}
	dst.newKey("acme") // an audited action on the new database
	var audit2 apiv1.AuditList
	dst.mustDo(dst.admin, "GET", "/v1/audit?limit=500", nil, 200, &audit2)
	if len(audit2.Entries) <= len(audit.Entries) {
		t.Fatalf("%d audit lines after the move, %d before", len(audit2.Entries), len(audit.Entries))
	}
	// A new line gets an id after the copied ones.
	if audit2.Entries[0].ID <= audit.Entries[0].ID {
		t.Fatalf("newest audit id %d after the move, %d before", audit2.Entries[0].ID, audit.Entries[0].ID)
	}
	dst.assertNoSecret(password)
}

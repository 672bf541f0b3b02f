package realguest

import (
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/testutil"
)

// noSecretsAnywhere fails t if any password is in the server's log, an
// agent's or qemu-ga's log, or the database files (records, the WAL).
func (e *env) noSecretsAnywhere(t testing.TB, ms []*machine, passwords ...string) {
	t.Helper()
	// What fleetpass writes, at the levels that would show a leak: the
	// server logs at debug, the agents run with --log-level debug. qemu-ga's
	// own log is not scanned: at its default level it logs no command, and
	// at debug it logs every command it reads, passwords included, by its
	// design and beyond fleetpass's reach.
	places := map[string]string{"server log": e.logs.String()}
	for _, m := range ms {
		places[m.name+" agent log"] = m.agentLogs()
		places[m.name+" sshd log"] = m.g.SSHDLog()
	}
	testutil.AssertNoSecretIn(t, places, passwords...)
	for _, pw := range passwords {
		testutil.AssertNotInDir(t, e.dir, pw)
	}
	if !strings.Contains(e.logs.String(), "agent command acknowledged") && len(ms) > 0 && ms[0].agentID != "" {
		t.Errorf("the server log holds no acknowledgement: is it logging at all?")
	}
}

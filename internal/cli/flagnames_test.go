package cli

import (
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

func TestNameFlagRewritesOnlyTheFieldTheServerNamed(t *testing.T) {
	for _, c := range []struct{ msg, field, want string }{
		{"INVALID_ARGUMENT: ttl: a duration such as 1h (HTTP 400)", "ttl", "INVALID_ARGUMENT: --ttl: a duration such as 1h (HTTP 400)"},
		{"mode: must be auto", "mode", "--mode: must be auto"},
		{"CONSENT_REQUIRED: consent to a forced shutdown (forceStop) to go on", "forceStop",
			"CONSENT_REQUIRED: consent to a forced shutdown (--force-stop) to go on"},
		{"EMPTY_INSTANCE_LIST: instanceIds: name at least one instance", "instanceIds",
			"EMPTY_INSTANCE_LIST: instances: name at least one instance"},
		// Another field's name in the text stays: only the named field is a flag.
		{"INVALID_ARGUMENT: stopMode: unlike mode: ...", "stopMode", "INVALID_ARGUMENT: --mode: unlike mode: ..."},
		// A field with no flag of another name stays as the server said it.
		{"INVALID_ARGUMENT: name: at most 128", "name", "INVALID_ARGUMENT: name: at most 128"},
		// A message that does not name the field is left alone.
		{"INVALID_ARGUMENT: the mode is wrong", "mode", "INVALID_ARGUMENT: the mode is wrong"},
	} {
		if got := nameFlag(c.msg, c.field); got != c.want {
			t.Errorf("nameFlag(%q, %q) = %q, want %q", c.msg, c.field, got, c.want)
		}
	}
}

// The server says which field an error is about (details.field); the CLI
// names the flag from that and does not print the field as a detail.
func TestCLIErrorsNameTheFlagOfTheFieldTheServerReported(t *testing.T) {
	srv := startAPI(t)
	r := srv.run(t, "", "agents", "token", "create", "--ttl", "10000h")
	if r.code == 0 || !strings.Contains(r.stderr, "--ttl: a duration") || strings.Contains(r.stderr, `"field"`) {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	in := srv.add(t, servertest.Machine{Name: "web", Running: true, Faults: sim.Faults{AgentDead: true}})
	r = srv.run(t, "", "reset-password", in.ID, "--mode", "offline", "--generate")
	if r.code == 0 || !strings.Contains(r.stderr, "(--force-stop)") || strings.Contains(r.stderr, "forceStop") {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	// The other details stay.
	if !strings.Contains(r.stderr, `details: {"instanceIds":["`+in.ID+`"]}`) {
		t.Fatalf("the instance ids are not shown: %s", r.stderr)
	}
}

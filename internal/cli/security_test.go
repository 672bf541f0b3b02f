package cli

import (
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// TestSecurity_ControlCharactersInNamesAreEscapedNotSentToTheTerminal pins
// issue 10 item 12: a name such as "\x1b[2J" (clear screen) that reaches the
// CLI, from an older server or a hostile one, prints as text.
func TestSecurity_ControlCharactersInNamesAreEscapedNotSentToTheTerminal(t *testing.T) {
	api := startAPI(t)
	const id = "ins-evil"
	api.fake.AddInstance(id, "evil\x1b[2J\u009b31m\x07", apiv1.StateRunning)
	for _, args := range [][]string{{"instances", "list"}, {"instances", "show", id}} {
		r := api.run(t, "", args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		if strings.ContainsAny(r.stdout, "\x1b\x07") || strings.Contains(r.stdout, "\u009b") {
			t.Fatalf("%v printed a control character: %q", args, r.stdout)
		}
		if !strings.Contains(r.stdout, `evil\x1b[2J\u009b31m\x07`) {
			t.Fatalf("%v: the name is not shown escaped: %q", args, r.stdout)
		}
	}
}

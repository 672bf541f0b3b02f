package console

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
)

// The console's JavaScript holds copies of lists the API defines: the
// instance states it filters by and names, the OS types, the modes, and
// the shape of an instance id. This test holds each copy to the Go
// definition, as the OpenAPI test holds the document to the routes.

var instanceStates = []string{apiv1.StatePending, apiv1.StateRunning, apiv1.StateStopping, apiv1.StateStopped,
	apiv1.StateStarting, apiv1.StateRebooting, apiv1.StateResettingPassword, apiv1.StateError,
	apiv1.StateUnknown, apiv1.StateMissing}

func readWeb(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("web/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// quoted returns the double-quoted strings in s.
func quoted(s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func TestTheStateFilterOffersEveryInstanceState(t *testing.T) {
	app := readWeb(t, "app.js")
	m := regexp.MustCompile(`(?s)id: "filter-state" },\s*\[(.*?)\]`).FindStringSubmatch(app)
	if m == nil {
		t.Fatal("no state list for #filter-state in app.js")
	}
	got := slices.DeleteFunc(quoted(m[1]), func(s string) bool { return s == "" })
	if !slices.Equal(sorted(got), sorted(instanceStates)) {
		t.Errorf("app.js filters by %v, the API's states are %v", sorted(got), sorted(instanceStates))
	}
}

func TestEveryInstanceStateHasWords(t *testing.T) {
	dom := readWeb(t, "dom.js")
	m := regexp.MustCompile(`(?s)const stateWords = \{(.*?)\};`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatal("no stateWords in dom.js")
	}
	for _, s := range instanceStates {
		if !regexp.MustCompile(`\b` + s + `:`).MatchString(m[1]) {
			t.Errorf("dom.js has no words for state %s", s)
		}
	}
}

func TestTheOSFilterOffersTheOSTypes(t *testing.T) {
	app := readWeb(t, "app.js")
	m := regexp.MustCompile(`(?s)id: "filter-os" },\s*\[(.*?)\]\.map`).FindStringSubmatch(app)
	if m == nil {
		t.Fatal("no OS list for #filter-os in app.js")
	}
	var got []string
	for _, pair := range regexp.MustCompile(`\["([^"]*)", "[^"]*"\]`).FindAllStringSubmatch(m[1], -1) {
		if pair[1] != "" {
			got = append(got, pair[1])
		}
	}
	if want := []string{core.OSLinux, core.OSWindows}; !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("app.js filters by OS %v, the API's OS types are %v", got, want)
	}
}

func TestTheInstanceIDPatternIsTheCores(t *testing.T) {
	app := readWeb(t, "app.js")
	if !strings.Contains(app, "/"+core.InstanceIDPattern+"/.test(") {
		t.Errorf("app.js does not recognise instance ids with %s", core.InstanceIDPattern)
	}
}

func TestTheDialogSendsTheAPIsModes(t *testing.T) {
	reset := readWeb(t, "reset.js")
	m := regexp.MustCompile(`mode: isOnline\(\) \? "([a-z]+)" : "([a-z]+)"`).FindStringSubmatch(reset)
	if m == nil || m[1] != apiv1.ModeOnline || m[2] != apiv1.ModeOffline {
		t.Errorf("reset.js sends modes %q, want %s or %s", m, apiv1.ModeOnline, apiv1.ModeOffline)
	}
}

func TestThePowerDialogOffersTheAPIsActionsAndStopModes(t *testing.T) {
	power := readWeb(t, "power.js")
	m := regexp.MustCompile(`(?s)const words = \{(.*?)\n\};`).FindStringSubmatch(power)
	if m == nil {
		t.Fatal("no words for the actions in power.js")
	}
	var actions []string
	for _, a := range regexp.MustCompile(`(?m)^\s*([a-z]+): \{`).FindAllStringSubmatch(m[1], -1) {
		actions = append(actions, a[1])
	}
	if want := []string{apiv1.ActionStart, apiv1.ActionStop, apiv1.ActionReboot}; !slices.Equal(sorted(actions), sorted(want)) {
		t.Errorf("power.js knows actions %v, the API's are %v", actions, want)
	}
	m = regexp.MustCompile(`(?s)const modes = \[(.*?)\n\];`).FindStringSubmatch(power)
	if m == nil {
		t.Fatal("no stop modes in power.js")
	}
	var modes []string
	for _, v := range regexp.MustCompile(`value: "([a-z-]+)"`).FindAllStringSubmatch(m[1], -1) {
		modes = append(modes, v[1])
	}
	if want := []string{apiv1.StopSoft, apiv1.StopSoftThenHard, apiv1.StopHard}; !slices.Equal(modes, want) {
		t.Errorf("power.js offers stop modes %v, want %v (the API's, gentlest first)", modes, want)
	}
	app := readWeb(t, "app.js")
	for _, a := range actions {
		if !strings.Contains(app, `startPower("`+a+`"`) {
			t.Errorf("app.js's row menu has no %s", a)
		}
	}
}

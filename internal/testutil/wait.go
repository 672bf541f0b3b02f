package testutil

import (
	"net"
	"testing"
	"time"
)

// WaitFor polls cond until it reports true, failing t with what when it
// has not after timeout. Deadlines in tests are generous on purpose: a
// loaded CI machine is slow, and a wait that ends early costs nothing.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("%s: not after %s", what, timeout)
	}
}

// Eventually polls cond until it reports true or timeout passes, and says
// which.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(wait*2, 100*time.Millisecond)
	}
}

// FreePort returns a loopback address no one listens on right now.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

package ipmi

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/bougou/go-ipmi/pkg/client"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// The driver's errors are the shared ones of package driver, so the engine
// gives every BMC driver's faults the same item error codes.
var (
	ErrUnreachable    = driver.ErrControllerUnreachable
	ErrAuth           = driver.ErrControllerAuth
	ErrCipherSuite    = driver.ErrControllerCipher
	ErrCommandFailed  = driver.ErrPowerCommandFailed
	ErrOutcomeUnknown = driver.ErrPowerOutcomeUnknown
)

// classifyConnect turns go-ipmi's session set-up errors into the driver's:
// which step failed, and how, says what the operator must fix. go-ipmi
// v0.9.1 joins the errors of its set-up steps into text (the chain is
// lost), so the step is recognised by its words. Nothing of the password
// is in go-ipmi's messages; the user name is.
func classifyConnect(bmc BMC, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, client.ErrRAKPAuthentication), strings.Contains(msg, "RAKP authentication failed"),
		strings.Contains(msg, "Unauthorized name"), strings.Contains(msg, "Invalid integrity check value"):
		return fmt.Errorf("BMC %s: %w (user %q)", bmc.Address, ErrAuth, bmc.User)
	case strings.Contains(msg, "Unauthorized role"), strings.Contains(msg, "Invalid role"):
		return fmt.Errorf("BMC %s: %w: user %q may not open an operator session", bmc.Address, ErrAuth, bmc.User)
	case strings.Contains(msg, "No resources"):
		return driver.Transient(fmt.Errorf("BMC %s: no free session: %s", bmc.Address, oneLine(msg)))
	case strings.Contains(msg, "Open Session failed") && !timeoutText(msg):
		return fmt.Errorf("BMC %s: %w %d: %s", bmc.Address, ErrCipherSuite, bmc.CipherSuite, oneLine(msg))
	}
	return driver.Transient(fmt.Errorf("BMC %s: %w: %s", bmc.Address, ErrUnreachable, oneLine(msg)))
}

func timeoutText(msg string) bool {
	for _, s := range []string{"timed out", "deadline", "no matching IPMI response", "no datagram", "connection refused", "UDP exchange error"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// oneLine keeps go-ipmi's multi-line messages on one line (item messages
// and logs).
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func hashPassword(pw []byte) []byte {
	h := sha256.Sum256(pw)
	return h[:8]
}

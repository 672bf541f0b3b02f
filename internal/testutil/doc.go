// Package testutil holds what fleetpass's tests share and would otherwise
// copy: building a command once per test process, polling until a
// condition holds, a log sink that is safe to read while a server writes
// to it, the SSH login check that proves a reset, passwords that fit every
// rule, scans for a secret on disk, and signed callers of the documented
// API dialects for end-to-end tests.
//
// The dialect tests of internal/server keep signers of their own, written
// from docs/design.md#signatures independently of internal/sign: the
// callers here use internal/sign, as a real client library would, and so
// cannot catch a bug both share.
package testutil

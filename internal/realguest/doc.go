// Package realguest holds fleetpass's end-to-end tests on real guests
// (docs/design.md#testing-ladder, level 3): guesttest's throwaway Linux
// guests running the real fleetpass agent binary or the real qemu-ga, a
// whole server assembled in process (or run as a real process, for crash
// tests), resets through the native API and the dialects, and every reset
// proven by SSH logins: the new password works and the old one does not.
//
// The tests need root and the tools guesttest needs; under -short they are
// skipped. The package has no code of its own outside tests.
package realguest

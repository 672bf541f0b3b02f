//go:build cgo && linux

// Package guestfstest holds what benchmarks of the disk reset share: the
// floor they are measured against, the libguestfs calls of a disk edit made
// in the test's own process.
package guestfstest

import (
	"os"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/guestfs"
	"github.com/fleetpass/fleetpass/internal/libcrypt"
)

// FloorEdit sets user's password in the qcow2 disk's /etc/shadow (its root
// filesystem on /dev/sda) with the libguestfs calls fleetpass-diskreset
// makes, in this process: no helper process, no request on stdin. It checks
// the hash reads back and fails tb on any error, with the appliance's log.
func FloorEdit(tb testing.TB, disk, user, password string) {
	tb.Helper()
	g, err := guestfs.Create()
	if err != nil {
		tb.Fatal(err)
	}
	defer g.Close()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("%v\n%s", err, g.Log())
		}
	}
	must(g.AddDrive(disk, "qcow2", false))
	must(g.Launch())
	must(g.Mount("/dev/sda", "/"))
	old, err := g.ReadFile("/etc/shadow")
	must(err)
	m := diskreset.GuestMethod(func(p string) ([]byte, error) {
		if ok, _ := g.Exists(p); !ok {
			return nil, os.ErrNotExist
		}
		return g.ReadFile(p)
	})
	hash, err := libcrypt.Hash([]byte(password), m.Prefix, m.Rounds)
	must(err)
	updated, err := diskreset.ReplaceHash(old, user, hash, time.Now().Unix()/86400)
	must(err)
	must(g.Write("/etc/shadow.fleetpass", updated))
	must(g.CopyAttributes("/etc/shadow", "/etc/shadow.fleetpass"))
	must(g.Rename("/etc/shadow.fleetpass", "/etc/shadow"))
	must(g.Sync())
	back, err := g.ReadFile("/etc/shadow")
	must(err)
	if h, _ := diskreset.HashOf(back, user); h != hash {
		tb.Fatal("the hash did not read back")
	}
	must(g.UmountAll())
	must(g.Shutdown())
}

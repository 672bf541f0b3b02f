//go:build cgo && linux

package diskreset_test

import (
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/guestfs/guestfstest"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// BenchmarkDiskEdit times the disk edit alone on the test guest's real
// disk (a qcow2 overlay of vmtest's rootfs): the helper as the server runs
// it (a process, the request on stdin, the guest's hash method, the
// read-back) against its floor, the same libguestfs calls made in this
// process. Each iteration does both, alternating, on fresh overlays; the
// metrics are medians. Run it with
//
//	go test -run '^$' -bench DiskEdit -benchtime 5x ./internal/diskreset/
func BenchmarkDiskEdit(b *testing.B) {
	env := vmtest.Guestfs(b)
	for _, kv := range env {
		k, v, _ := cut(kv)
		b.Setenv(k, v)
	}
	img := vmtest.Image(b)
	r := &diskreset.Runner{Path: vmtest.BuildDiskHelper(b, "")}
	overlay := func() string {
		p := filepath.Join(b.TempDir(), "disk.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", img.Rootfs, p).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img: %v: %s", err, out)
		}
		return p
	}
	var floors, helpers []time.Duration
	b.ResetTimer()
	for range b.N {
		disk := overlay()
		t := time.Now()
		guestfstest.FloorEdit(b, disk, "root", "Bench-Pass-123")
		floors = append(floors, time.Since(t))

		disk = overlay()
		t = time.Now()
		if _, err := r.Reset(b.Context(), diskreset.Request{Disks: []diskreset.Disk{{Path: disk, Format: "qcow2"}},
			Root: "/dev/sda", User: "root"}, []byte("Bench-Pass-123")); err != nil {
			b.Fatal(err)
		}
		helpers = append(helpers, time.Since(t))
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration {
		c := append([]time.Duration(nil), ds...)
		sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
		return c[len(c)/2]
	}
	f, h := med(floors), med(helpers)
	b.ReportMetric(f.Seconds(), "floor-s")
	b.ReportMetric(h.Seconds(), "helper-s")
	b.ReportMetric(100*(h-f).Seconds()/f.Seconds(), "overhead-%")
	b.Logf("floor %v, helper %v", floors, helpers)
}

func cut(kv string) (string, string, bool) {
	for i := range kv {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

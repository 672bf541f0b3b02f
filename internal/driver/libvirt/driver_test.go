package libvirt

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
)

func TestChangesNeverBlock(t *testing.T) {
	d := New(Config{})
	d.changes = make(chan Change, 2)
	h := &host{id: "h1", status: HostStatus{Connected: true}}
	for _, uuid := range []string{"a", "b", "c", "d"} {
		d.emit(h, Change{HostID: "h1", UUID: uuid, Connected: true})
	}
	if !h.resyncPending {
		t.Fatal("dropped changes left no resync pending")
	}
	for _, want := range []string{"a", "b"} {
		if c := <-d.changes; c.UUID != want {
			t.Fatalf("got change %+v, want UUID %q", c, want)
		}
	}
	// The next change finds room: the resync goes out in its place,
	// covering it and the dropped ones.
	d.emit(h, Change{HostID: "h1", UUID: "e", Connected: true})
	if c := <-d.changes; c != (Change{HostID: "h1", Connected: true}) {
		t.Fatalf("got change %+v, want a resync of h1", c)
	}
	if h.resyncPending {
		t.Fatal("resync still pending after it was sent")
	}
	d.emit(h, Change{HostID: "h1", UUID: "f", Connected: true})
	if c := <-d.changes; c.UUID != "f" {
		t.Fatalf("got change %+v, want UUID f", c)
	}
}

func TestHosts(t *testing.T) {
	d := New(Config{})
	if err := d.SetHost(Host{ID: "", URI: "qemu:///system"}); err == nil {
		t.Error("SetHost with an empty id succeeded")
	}
	err := d.SetHost(Host{ID: "h1", URI: "qemu+ssh://root:hunter2@kvm1/system"})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "h1") {
		t.Errorf("SetHost with a password in the URI: %v", err)
	}
	if err := d.SetHost(Host{ID: "h1", URI: "qemu+ssh://kvm1/system"}); err != nil {
		t.Fatal(err)
	}
	if st := d.HostStatus("h1"); st.Connected || st.Error == "" {
		t.Errorf("HostStatus before Run = %+v", st)
	}
	if st := d.HostStatus("nope"); st.Connected || st.Error != "unknown host" {
		t.Errorf("HostStatus of an unknown host = %+v", st)
	}

	// Not connected (Run was never called): transient, but an unknown
	// machine is still unknown.
	ctx := context.Background()
	ref := driver.Ref{Host: "h1", Address: testDomainUUID}
	if _, err := d.State(ctx, ref); !driver.IsTransient(err) {
		t.Errorf("State on a host that is not connected: %v, want a transient error", err)
	}
	if _, err := d.Domains(ctx, "h1"); !driver.IsTransient(err) {
		t.Errorf("Domains on a host that is not connected: %v, want a transient error", err)
	}
	if err := d.Ping(ctx, driver.Ref{Host: "h1", Address: "x"}); !errors.Is(err, driver.ErrMachineNotFound) || driver.IsTransient(err) {
		t.Errorf("Ping with a bad address: %v", err)
	}
	// With one host, an empty Host means that one.
	if _, err := d.State(ctx, driver.Ref{Address: testDomainUUID}); !driver.IsTransient(err) {
		t.Errorf("State with an empty host: %v, want the only host's transient error", err)
	}
	if err := d.SetHost(Host{ID: "h2", URI: "qemu:///system"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.State(ctx, driver.Ref{Address: testDomainUUID}); !errors.Is(err, driver.ErrMachineNotFound) {
		t.Errorf("State with an empty host among two: %v, want ErrMachineNotFound", err)
	}
	d.RemoveHost("h1")
	d.RemoveHost("h1")
	if _, err := d.State(ctx, ref); !errors.Is(err, driver.ErrMachineNotFound) {
		t.Errorf("State on a removed host: %v, want ErrMachineNotFound", err)
	}
	if err := d.SetPassword(ctx, driver.Ref{Host: "h2", Address: testDomainUUID}, "a:b", []byte("x")); err == nil {
		t.Error("SetPassword with a colon in the user name succeeded")
	}
}

package server

import (
	"context"
	"log/slog"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/driver/libvirt"
)

// diskResets finds and probes the fleetpass-diskreset helper, and says at
// start-up whether disk resets are available and why not: an operator
// whose agentless VMs fail with DISK_RESET_UNAVAILABLE finds the reason in
// the first lines of the log.
func diskResets(ctx context.Context, helper string, log *slog.Logger) (libvirt.DiskResetter, string) {
	if helper == "off" {
		const why = "disabled (--disk-helper off)"
		log.Info("disk resets: unavailable", "reason", why)
		return nil, why
	}
	path := helper
	if path == "" {
		var err error
		if path, err = diskreset.Find(); err != nil {
			why := err.Error()
			log.Info("disk resets: unavailable", "reason", why)
			return nil, why
		}
	}
	r := &diskreset.Runner{Path: path, Log: log}
	p, err := r.Probe(ctx)
	if err != nil {
		why := err.Error()
		log.Warn("disk resets: unavailable", "helper", path, "reason", why)
		return nil, why
	}
	if !p.OK {
		log.Warn("disk resets: unavailable", "helper", path, "libguestfs", p.Version, "reason", p.Problem)
		return nil, p.Problem
	}
	log.Info("disk resets: available", "helper", path, "libguestfs", p.Version, "backend", p.Backend,
		"kernel", p.Kernel, "force_tcg", p.ForcedTCG)
	return r, ""
}

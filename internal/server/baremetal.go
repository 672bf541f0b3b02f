package server

import (
	"context"
	"time"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/inventory"
)

// addBMCDrivers adds the IPMI power driver of bare-metal servers. Its
// credentials are read from the database (sealed) by the core service at
// each session's opening, so the service must be set before first use.
func (s *Server) addBMCDrivers(d *engine.Drivers) {
	cfg := s.cfg.IPMI
	if cfg.Log == nil {
		cfg.Log = s.log
	}
	s.ipmi = ipmi.New(ipmi.CredentialsFunc(s.bmcCredentials), cfg)
	d.Power[core.IPMIDriver] = s.ipmi
	d.BMCDriver = core.IPMIDriver
}

func (s *Server) bmcCredentials(ctx context.Context, ref driver.Ref) (ipmi.BMC, error) {
	b, err := s.svc.BMCOf(ctx, ref.InstanceID)
	if err != nil {
		return ipmi.BMC{}, err
	}
	return ipmi.BMC{Address: b.Address, User: b.User, Password: b.Password, CipherSuite: b.CipherSuite}, nil
}

// startBMCs installs the BMC checker and the BMC watcher.
func (s *Server) startBMCs() {
	s.svc.SetBMCChecker(bmcChecker{s.ipmi})
	s.syncer.LeavePower(core.IPMIDriver)
	s.bmcWatch = inventory.NewBMCWatcher(s.svc, s.store, core.IPMIDriver, s.ipmi, s.cfg.BMCSyncInterval, s.log)
	s.metrics.GaugeFunc("fleetpass_bmcs_faulty", "Bare-metal servers whose BMC did not answer, or refused the credentials, at its last check.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, _ := s.store.CountFaultyBMCs(ctx)
		return float64(n)
	})
}

// bmcChecker checks BMCs for the core service with the IPMI driver.
type bmcChecker struct{ d *ipmi.Driver }

func (c bmcChecker) CheckBMC(ctx context.Context, powerDriver string, b core.BMCLogin) (core.BMCCheck, error) {
	p, err := c.d.Probe(ctx, ipmi.BMC{Address: b.Address, User: b.User, Password: b.Password, CipherSuite: b.CipherSuite})
	return core.BMCCheck{On: p.On, AcceptsSuite0: p.AcceptsSuite0}, err
}

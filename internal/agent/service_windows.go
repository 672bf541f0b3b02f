//go:build windows

package agent

import (
	"context"
	"fmt"

	"golang.org/x/sys/windows/svc"
)

// ServiceName is the Windows service's name (sc.exe create fleetpass-agent ...).
const ServiceName = "fleetpass-agent"

// IsService reports whether the process was started by the Windows
// service control manager.
func IsService() (bool, error) { return svc.IsWindowsService() }

// RunService runs run as the Windows service: it reports running, and
// cancels run's context when the service manager asks it to stop.
func RunService(run func(ctx context.Context) error) error {
	h := &serviceHandler{run: run}
	if err := svc.Run(ServiceName, h); err != nil {
		return fmt.Errorf("run as a Windows service: %w", err)
	}
	return h.err
}

type serviceHandler struct {
	run func(ctx context.Context) error
	err error
}

func (h *serviceHandler) Execute(args []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case err := <-done:
			h.err = err
			status <- svc.Status{State: svc.StopPending}
			if err != nil {
				return false, 1
			}
			return false, 0
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending}
				cancel()
				h.err = <-done
				return false, 0
			}
		}
	}
}

//go:build !windows

package agent

import "context"

// IsService reports whether the process runs as a Windows service: never
// here (systemd runs the agent as a plain foreground process).
func IsService() (bool, error) { return false, nil }

// RunService runs run in the foreground; only Windows has a service
// manager protocol to speak.
func RunService(run func(ctx context.Context) error) error { return run(context.Background()) }

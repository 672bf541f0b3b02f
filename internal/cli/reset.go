package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

type resetFlags struct {
	user          string
	mode          string
	method        string
	forceStop     bool
	passwordStdin bool
	generate      bool
	wait          bool
}

func (a *app) newResetPasswordCmd() *cobra.Command {
	var f resetFlags
	cmd := &cobra.Command{
		Use:   "reset-password [flags] (--password-stdin | --generate) INSTANCE...",
		Short: "Reset the login password of one or more instances",
		Long: `Reset the login password of one or more instances (up to 100 at once).

The new password is never taken from a flag. Give it on standard input with
--password-stdin (the first line is read), or let the server make one with
--generate (it is printed once, to standard output, and never shown again).
Without either, fleetpass asks for it twice when standard input is a
terminal.

Modes: auto (default) changes the password online when the instance runs
and its guest agent is alive, offline otherwise; online needs a running
instance with a live guest agent; offline stops the instance, stages the
password and starts it again. Stopping a running instance needs
--force-stop: it is shut down, and its power is cut if the shutdown times
out, with the risk of losing unsaved data.

Methods: auto (default) reaches the guest through its guest channel (the
fleetpass agent or the QEMU guest agent) when it has one, else edits its
disk; guest insists on the channel; disk (offline only) edits /etc/shadow
on the stopped VM's disk, with nothing installed in the guest (Linux VMs of
a local libvirt host; see docs/libvirt.md).

With --wait the command follows the operation until every instance is done,
showing each instance's progress.

` + exitCodesHelp,
		Example: `  fleetpass reset-password --generate --wait ins-1a2b3c4d
  printf '%s\n' "$NEW_PASSWORD" | fleetpass reset-password --password-stdin --user admin ins-1a2b3c4d ins-5e6f7a8b
  fleetpass reset-password --mode offline --force-stop ins-1a2b3c4d
  fleetpass reset-password --method disk --force-stop --wait ins-1a2b3c4d`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runResetPassword(cmd.Context(), f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.user, "user", "", "user whose password changes (default: root on Linux, Administrator on Windows)")
	fl.StringVar(&f.mode, "mode", "", "auto, online or offline (default auto)")
	fl.StringVar(&f.method, "method", "", "auto, guest or disk (default auto)")
	fl.BoolVar(&f.forceStop, "force-stop", false, "agree to shut running instances down, forcibly if needed (data may be lost)")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the new password from the first line of standard input")
	fl.BoolVar(&f.generate, "generate", false, "let the server generate a password and print it once")
	fl.BoolVar(&f.wait, "wait", false, "wait until the operation finishes, showing progress")
	cmd.MarkFlagsMutuallyExclusive("password-stdin", "generate")
	return cmd
}

func (a *app) runResetPassword(ctx context.Context, f resetFlags, ids []string) error {
	switch f.mode {
	case "", apiv1.ModeAuto, apiv1.ModeOnline, apiv1.ModeOffline:
	default:
		return usageErrorf("--mode must be auto, online or offline, not %q", f.mode)
	}
	switch f.method {
	case "", apiv1.MethodAuto, apiv1.MethodGuest, apiv1.MethodDisk:
	default:
		return usageErrorf("--method must be auto, guest or disk, not %q", f.method)
	}
	// cobra checks exclusive flags too, but the rule is important enough to
	// hold even if the flag wiring changes.
	if f.passwordStdin && f.generate {
		return usageErrorf("--password-stdin and --generate cannot be used together")
	}
	fd, stdinIsTerm := terminalFd(a.stdin)
	if !f.passwordStdin && !f.generate && !stdinIsTerm {
		return usageErrorf("no password: use --password-stdin or --generate (passwords are never accepted as flags)")
	}
	// The client is built before the password is asked for, so that a
	// configuration mistake does not make people type it for nothing.
	c, err := a.apiClient()
	if err != nil {
		return err
	}

	req := apiv1.PasswordReset{InstanceIDs: ids, User: f.user, Mode: f.mode, Method: f.method, ForceStop: f.forceStop, Generate: f.generate}
	var password []byte
	switch {
	case f.generate:
	case f.passwordStdin && stdinIsTerm:
		// Someone typing at --password-stdin must not see it echoed.
		password, err = readHidden(ctx, fd, a.stderr, "Password: ")
	case f.passwordStdin:
		password, err = readPasswordLine(a.stdin)
	default:
		password, err = promptPassword(ctx, fd, a.stderr)
	}
	if err != nil {
		return err
	}
	// Cleared once every request is sent: an admin's selection over
	// several tenants is sent once per tenant.
	defer clear(password)
	err = a.perTenant(ctx, c, ids, f.wait, func(ids []string) (*apiv1.Operation, error) {
		r := req
		r.InstanceIDs = ids
		op, err := c.ResetPasswordSecret(ctx, r, password)
		if err != nil {
			return nil, fmt.Errorf("resetting passwords: %w", err)
		}
		return op, nil
	})
	return err
}

// reportOperation prints an accepted operation, and follows it with wait.
func (a *app) reportOperation(ctx context.Context, c *client.Client, op *apiv1.Operation, wait bool) error {
	generated := op.GeneratedPassword
	if a.jsonOutput() {
		if !wait {
			return writeJSON(a.stdout, op)
		}
		done, err := a.follow(ctx, c, op)
		if err != nil {
			return err
		}
		// The password is in the first answer only; scripts get it once,
		// with the final state.
		done.GeneratedPassword = generated
		if err := writeJSON(a.stdout, done); err != nil {
			return err
		}
		return waitResult(done)
	}

	fmt.Fprintf(a.stdout, "Operation %s accepted: %s of %d instance(s).\n", op.ID, op.Kind, len(op.Items))
	if generated != "" {
		fmt.Fprintf(a.stdout, "Generated password (shown once): %s\n", generated)
	}
	if !wait {
		fmt.Fprintf(a.stdout, "Follow it with: fleetpass operations wait %s\n", op.ID)
		return nil
	}
	done, err := a.follow(ctx, c, op)
	if err != nil {
		return err
	}
	return waitResult(done)
}

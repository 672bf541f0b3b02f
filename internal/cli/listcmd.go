package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/client"
)

// listCmd describes a command that fetches one list, unpaged, and prints
// it: the API's answer as JSON with -o json (an empty list as [], never
// null), else a table of one row per item.
type listCmd[L, T any] struct {
	use, short string
	// what names the list in errors: "listing <what>: ...".
	what string
	// fetch is a method expression of the client, e.g.
	// (*client.Client).ListKeys.
	fetch  func(*client.Client, context.Context) (*L, error)
	items  func(*L) *[]T
	header []string
	cells  func(T) []string
}

func newListCmd[L, T any](a *app, s listCmd[L, T]) *cobra.Command {
	return &cobra.Command{
		Use:   s.use,
		Short: s.short,
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			l, err := s.fetch(c, cmd.Context())
			if err != nil {
				return fmt.Errorf("listing %s: %w", s.what, err)
			}
			items := s.items(l)
			if a.jsonOutput() {
				*items = nonNil(*items)
				return writeJSON(a.stdout, l)
			}
			return printTable(a.stdout, s.header, *items, s.cells)
		},
	}
}

// printTable prints a table: the header, then one row of cells per item.
func printTable[T any](w io.Writer, header []string, items []T, cells func(T) []string) error {
	tw := newTable(w)
	row(tw, header...)
	for _, it := range items {
		row(tw, cells(it)...)
	}
	return tw.Flush()
}

// newEachIDCmd is a command that does one thing to each ID argument
// (revoke, remove), through eachID: "<done> ID" for each success, and
// every failure, as "<verb> <what> ID: ...". do is a method expression of
// the client, e.g. (*client.Client).RevokeKey.
func (a *app) newEachIDCmd(use, short, done, verb, what string,
	do func(c *client.Client, ctx context.Context, id string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			return a.eachID(args, done, func(id string) error {
				if err := do(c, cmd.Context(), id); err != nil {
					return fmt.Errorf("%s %s %s: %w", verb, what, id, err)
				}
				return nil
			})
		},
	}
}

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"golang.org/x/term"
)

func writeJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	data = append(data, '\n')
	_, err = w.Write(data)
	return err
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes one tab-separated table row; empty cells show as "-" so
// columns stay aligned and readable. Cells come from the server, so their
// control characters are shown escaped, never sent to the terminal.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		cells[i] = ctlchar.Escape(c)
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmtTime(*t)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// terminalFd returns the file descriptor behind v when v is a terminal.
func terminalFd(v any) (int, bool) {
	f, ok := v.(interface{ Fd() uintptr })
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// collect fetches one page, or every page when all is set, and returns the
// items and the cursor of the next page (empty when there is none).
func collect[T any](ctx context.Context, all bool, cursor string,
	fetch func(ctx context.Context, cursor string) ([]T, string, error)) ([]T, string, error) {
	var out []T
	for {
		items, next, err := fetch(ctx, cursor)
		if err != nil {
			return nil, "", err
		}
		out = append(out, items...)
		if !all || next == "" {
			return out, next, nil
		}
		if next == cursor {
			return nil, "", fmt.Errorf("the server returned the same cursor %q twice", next)
		}
		cursor = next
	}
}

// moreHint tells people on stderr that a list goes on, without disturbing
// the table on stdout.
func (a *app) moreHint(next string) {
	if next != "" && !a.jsonOutput() {
		fmt.Fprintf(a.stderr, "(more results: use --all, or --cursor %s)\n", next)
	}
}

// buildVersion is the module version the binary was built from, with the
// VCS revision when the build recorded it.
func buildVersion() string {
	v, rev := versionInfo()
	if rev != "" {
		return v + "+" + rev
	}
	return v
}

func versionInfo() (version, revision string) {
	version = "devel"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, ""
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			revision = s.Value[:12]
		}
	}
	return version, revision
}

func (a *app) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this fleetpass binary",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, rev := versionInfo()
			if a.jsonOutput() {
				return writeJSON(a.stdout, map[string]string{
					"version": v, "revision": rev, "goVersion": runtime.Version(),
					"platform": runtime.GOOS + "/" + runtime.GOARCH,
				})
			}
			fmt.Fprintf(a.stdout, "fleetpass %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// joinNonEmpty joins the non-empty values with spaces.
func joinNonEmpty(vals ...string) string {
	var out []string
	for _, v := range vals {
		if v != "" {
			out = append(out, v)
		}
	}
	return strings.Join(out, " ")
}

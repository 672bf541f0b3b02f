package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetpass/fleetpass/internal/console"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
)

// ConsoleCredentials is the JSON of <data-dir>/console-credentials: the
// console admin's initial password, which must be changed at first sign-in.
type ConsoleCredentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
	URL      string `json:"url,omitempty"`
}

// registerConsole adds the web console, and makes its admin user when no
// console user exists yet.
func (s *Server) registerConsole(mux *http.ServeMux) {
	c := console.New(s.svc, s.log)
	// A second instance of the native API, authenticated by the console's
	// session cookie, so the console runs the same handlers as every client.
	api := http.NewServeMux()
	nativeapi.New(s.svc, s.log, s.metrics, s.cfg.API).WithAuthenticator(c.Authenticate).Register(api)
	c.Register(mux, api)
	if err := s.bootstrapConsole(); err != nil {
		s.log.Error("could not create the console's admin user; the console cannot be signed in to", "err", err)
	}
}

// bootstrapConsole creates the console admin on a server without console
// users and writes its initial password to <data-dir>/console-credentials
// (mode 0600), printing the path, never the password.
func (s *Server) bootstrapConsole() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(s.cfg.DataDir, "console-credentials")
	name, pw, created, err := s.svc.EnsureConsoleAdmin(ctx)
	if err != nil {
		return err
	}
	url := s.publicURL()
	if url != "" {
		url += console.Prefix + "/"
	}
	if !created {
		if _, err := os.Stat(path); err == nil {
			fmt.Fprintf(s.cfg.Out, "console: %s (first credentials in %s)\n", url, path)
		}
		return nil
	}
	data, _ := json.MarshalIndent(ConsoleCredentials{User: name, Password: pw, URL: url}, "", "  ")
	if err := writePrivate(path, append(data, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(s.cfg.Out, "created the console user %q; its initial password is in %s (mode 0600), "+
		"to be changed at first sign-in; console: %s\n", name, path, url)
	return nil
}

// Package server assembles a fleetpass server: it opens the data directory
// and the database, makes the engine, the core service and the front doors,
// bootstraps the first admin key, seeds the demo fleet, and serves HTTP(S)
// until its context ends, then shuts down gracefully. Work in flight is
// durable and resumes at the next start.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/console"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/driver/libvirt"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/inventory"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/qga"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/tick"
)

// Config is the server's configuration (the flags of `fleetpass serve`).
type Config struct {
	Listen      string
	DataDir     string
	DatabaseURL string
	// SecretKeyFile is the sealing key's file; empty: <DataDir>/secret.key,
	// created at the first start. Servers sharing a PostgreSQL database
	// need the same key, so it can live outside the data directory.
	SecretKeyFile string
	TLSCert       string
	TLSKey        string

	// Demo seeds the demo tenant's simulated fleet.
	Demo bool
	// Sim enables the simulated drivers without the demo fleet; SimLoad
	// seeds that many zero-latency simulated instances for load tests.
	Sim     bool
	SimLoad int
	// SimBoot and SimShutdown are the simulated machines' boot and graceful
	// shutdown times (demo and load fleets).
	SimBoot, SimShutdown time.Duration
	// SimActionTime is how long each simulated power or password call
	// takes (sim.Options.ActionTime): replica tests detect overlaps in it.
	SimActionTime time.Duration

	Engine engine.Config
	API    nativeapi.Config
	// Agent tunes the fleetpass agent channel; zero fields take defaults.
	Agent        agentserver.Config
	SyncInterval time.Duration
	// LibvirtHosts are libvirt URIs to add as hosts at start-up when they
	// are not registered yet (`serve --libvirt qemu:///system`), into
	// LibvirtTenant (default: the admin tenant).
	LibvirtHosts  []string
	LibvirtTenant string
	// Libvirt tunes the libvirt driver; zero fields take defaults.
	Libvirt libvirt.Config
	// IPMI tunes the IPMI driver of bare-metal servers; zero fields take
	// defaults. BMCSyncInterval is how often each idle bare-metal server's
	// BMC is asked for its power state (default 5s).
	IPMI            ipmi.Config
	BMCSyncInterval time.Duration
	// DiskHelper is the fleetpass-diskreset helper for disk resets of
	// libvirt VMs: a path, "" to look beside the executable then on PATH,
	// or "off" to disable disk resets.
	DiskHelper string

	// QGASocketDirs are the only directories whose QEMU guest agent
	// sockets the qga channel dials (--qga-socket-dir); none: it dials no
	// socket at all.
	QGASocketDirs []string
	// MaxInstancesPerTenant is the per-tenant instance quota; zero means
	// core.DefaultMaxInstancesPerTenant.
	MaxInstancesPerTenant int
	// TrustedProxies are the reverse proxies (CIDRs) whose X-Forwarded-For
	// gives the client's address (--trusted-proxies).
	TrustedProxies []string

	// ReplicaID names this server among the servers sharing its database
	// (--replica-id); empty: a random id at each start. PublicURL is the
	// address other replicas and operators reach it at (--public-url);
	// empty: derived from Listen. Version is the fleetpass version it
	// runs. ReplicaHeartbeat and ReplicaTTL override the membership's
	// heartbeat period and time-to-live (tests).
	ReplicaID, PublicURL, Version string
	ReplicaHeartbeat, ReplicaTTL  time.Duration

	// Power and Guest are drivers of the caller's own, by name, added to
	// the built-in ones: how tests plug in the power of their throwaway
	// guests and still run the server users run.
	Power map[string]driver.Power
	Guest map[string]driver.Guest
	// Clock, when set, replaces the database's clock (tests of expiries).
	Clock func() time.Time
	// AdminKeyID and AdminKeySecret, when set, are the bootstrap admin key
	// of an empty database instead of random ones, as the environment
	// variables FLEETPASS_ADMIN_KEY_ID and FLEETPASS_ADMIN_KEY_SECRET.
	AdminKeyID, AdminKeySecret string

	Log *slog.Logger
	// Out receives the messages meant for the operator at start-up (where
	// the credentials are, the URL): standard output for `serve`.
	Out io.Writer
}

// Server is an assembled server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	lock    *os.File
	store   *store.Store
	sealer  *sealer.Sealer
	sim     *sim.Fleet
	bus     *events.Bus
	engine  *engine.Engine
	svc     *core.Service
	metrics *metrics.Metrics
	syncer  *inventory.Syncer
	libvirt *libvirt.Driver
	hosts   *libvirtHosts
	ipmi    *ipmi.Driver
	// bmcWatch keeps bare-metal servers' power state in step with their BMCs.
	bmcWatch *inventory.BMCWatcher
	handler  http.Handler
	ready    bool
	trusted  []netip.Prefix
	replica  *replica
}

// Open prepares a server: data directory, database, engine, bootstrap and
// demo seed. Serve runs it.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 15 * time.Second
	}
	if cfg.BMCSyncInterval <= 0 {
		cfg.BMCSyncInterval = 5 * time.Second
	}
	trusted, err := httpx.ParsePrefixes(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	qgaDirs := make([]string, 0, len(cfg.QGASocketDirs))
	for _, d := range cfg.QGASocketDirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("--qga-socket-dir %q: must be an absolute path", d)
		}
		qgaDirs = append(qgaDirs, filepath.Clean(d))
	}
	if err := secureDataDir(cfg.DataDir, cfg.Log); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, trusted: trusted}
	ok := false
	defer func() {
		if !ok {
			s.closeAll()
		}
	}()
	if s.lock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	var seal *sealer.Sealer
	if cfg.SecretKeyFile != "" {
		seal, err = sealer.Load(cfg.SecretKeyFile)
	} else {
		seal, err = sealer.LoadOrCreate(filepath.Join(cfg.DataDir, "secret.key"))
	}
	if err != nil {
		return nil, err
	}
	s.sealer = seal
	if cfg.DatabaseURL != "" {
		s.store, err = store.OpenPostgres(ctx, cfg.DatabaseURL)
	} else {
		if err := createPrivate(filepath.Join(cfg.DataDir, "fleetpass.db")); err != nil {
			return nil, err
		}
		s.store, err = store.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "fleetpass.db"))
	}
	if err != nil {
		return nil, err
	}
	if err := s.store.CheckKey(ctx, seal.KeyCheck()); err != nil {
		if errors.Is(err, store.ErrKeyMismatch) {
			return nil, fmt.Errorf("%w: every server of one database needs the same key (--secret-key-file); refusing to start rather than fail each sealed password and key later", err)
		}
		return nil, err
	}
	if cfg.Clock != nil {
		s.store.SetClock(cfg.Clock)
	}
	if err := s.openReplica(); err != nil {
		return nil, err
	}
	cfg = s.cfg
	drivers := engine.Drivers{Power: map[string]driver.Power{}, Guest: map[string]driver.Guest{},
		HostDriver: core.LibvirtDriver, AgentDriver: core.AgentGuestDriver}
	if cfg.Demo || cfg.Sim || cfg.SimLoad > 0 {
		if err := s.openSim(ctx, cfg); err != nil {
			return nil, err
		}
		drivers.Power["sim"], drivers.Guest["sim"] = s.sim, s.sim
	}
	// The QEMU guest agent on a unix socket the host exposes: the address
	// of an instance's guest link is the socket's path.
	drivers.Guest["qga"] = &qga.Channel{SocketDirs: qgaDirs}
	// libvirt hosts: power and the QEMU guest agent through libvirt. The
	// driver always exists; it has nothing to do until a host is added.
	lvcfg := cfg.Libvirt
	if lvcfg.Log == nil {
		lvcfg.Log = cfg.Log
	}
	if lvcfg.Disk == nil && lvcfg.DiskUnavailable == "" {
		lvcfg.Disk, lvcfg.DiskUnavailable = diskResets(ctx, cfg.DiskHelper, cfg.Log)
	}
	if lvcfg.Lookup == nil {
		// A host another replica added a moment ago is in the table before
		// its notice reaches this replica's pass.
		lvcfg.Lookup = func(ctx context.Context, id string) (libvirt.Host, bool, error) {
			h, err := s.store.GetHost(ctx, s.store.DB, id)
			if errors.Is(err, store.ErrNotFound) {
				return libvirt.Host{}, false, nil
			}
			if err != nil {
				return libvirt.Host{}, false, err
			}
			return libvirt.Host{ID: h.ID, URI: h.URI, OnDemand: true}, true, nil
		}
	}
	s.libvirt = libvirt.New(lvcfg)
	drivers.Power[core.LibvirtDriver], drivers.Guest[core.LibvirtDriver] = s.libvirt, s.libvirt
	if err := s.addAgentDrivers(&drivers); err != nil {
		return nil, err
	}
	s.addBMCDrivers(&drivers)
	for name, p := range cfg.Power {
		drivers.Power[name] = p
	}
	for name, g := range cfg.Guest {
		drivers.Guest[name] = g
	}
	s.bus = events.NewBus(s.store, cfg.Log, 250*time.Millisecond)
	if err := s.bus.Start(ctx); err != nil {
		return nil, err
	}
	if s.engine, err = engine.New(ctx, s.store, drivers, seal, s.bus, s.metrics, cfg.Log, cfg.Engine); err != nil {
		return nil, err
	}
	s.svc = core.New(s.store, s.engine, seal, s.bus, drivers, cfg.Log)
	s.svc.SetReplicas(s.replica.members)
	s.svc.SetMaxInstancesPerTenant(cfg.MaxInstancesPerTenant)
	s.hosts = newLibvirtHosts(s.libvirt, s.engine)
	s.svc.SetHostConnector(s.hosts)
	s.svc.SetRateLimiter(s.rateLimiter())
	s.registerWakeupMetrics()
	s.syncer = inventory.New(s.svc, s.store, drivers, cfg.Log, cfg.SyncInterval)
	s.startBMCs()
	// Replicas starting together on an empty database take turns, so one
	// creates the admin key and the others see it.
	err = s.store.WithSessionLock(ctx, store.BootstrapLock, "bootstrap", s.bootstrap)
	if err != nil {
		return nil, err
	}
	if err := s.seedSim(ctx, cfg); err != nil {
		return nil, err
	}
	s.metrics.GaugeFunc("fleetpass_queue_depth", "Items waiting for or in execution.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, _ := s.engine.QueueDepth(ctx)
		return float64(n)
	})
	s.metrics.GaugeFunc("fleetpass_instances", "Registered instances.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, _ := s.store.CountInstances(ctx, "")
		return float64(n)
	})
	s.metrics.GaugeFunc("fleetpass_libvirt_hosts_disconnected", "libvirt hosts whose connection is down.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, _ := s.svc.DisconnectedHosts(ctx)
		return float64(n)
	})
	if err := privateFiles(cfg.DataDir, cfg.Log); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	ok = true
	return s, nil
}

// Service is the core service (in-process tests).
func (s *Server) Service() *core.Service { return s.svc }

// Sim is the simulated fleet, or nil.
func (s *Server) Sim() *sim.Fleet { return s.sim }

// Store is the database (tests).
func (s *Server) Store() *store.Store { return s.store }

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	nativeapi.New(s.svc, s.log, s.metrics, s.cfg.API).Register(mux)
	s.registerFrontDoors(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !s.ready {
			http.Error(w, "starting\n", http.StatusServiceUnavailable)
			return
		}
		if err := s.clusterReady(); err != nil {
			readyRefusal(w, err)
			return
		}
		if err := s.store.DB.PingContext(ctx); err != nil {
			http.Error(w, "database unavailable\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		// A browser asks for HTML: it opens the console. Programs (curl,
		// monitoring) keep the plain answer.
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, console.Prefix+"/", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "fleetpass is running. API: /v1 (OpenAPI at /v1/openapi.json), metrics: /metrics.")
	})
	return httpx.Middleware(s.log, mux, s.trusted...)
}

// Start starts the background work (engine, event bus, inventory sync)
// without serving HTTP: in-process tests serve Handler themselves.
func (s *Server) Start(ctx context.Context) error {
	if err := s.joinCluster(ctx); err != nil {
		return err
	}
	if err := s.engine.Start(ctx); err != nil {
		return err
	}
	s.startShared(ctx)
	go s.bus.Run(ctx)
	go s.syncer.Run(ctx)
	go s.bmcWatch.Run(ctx)
	if err := s.startHosts(ctx); err != nil {
		return err
	}
	go s.pruneLoop(ctx)
	s.ready = true
	return nil
}

func (s *Server) pruneLoop(ctx context.Context) {
	tick.Every(ctx, time.Hour, func(ctx context.Context) {
		if err := s.store.PruneIdempotency(ctx, time.Now().Add(-24*time.Hour)); err != nil && ctx.Err() == nil {
			s.log.Warn("prune idempotency keys", "err", err)
		}
	})
}

// Serve listens and serves until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	tlsCfg, fingerprint, err := s.tlsConfig(ln.Addr())
	if err != nil {
		ln.Close()
		return err
	}
	bg, cancelBG := context.WithCancel(context.Background())
	defer cancelBG()
	if err := s.Start(bg); err != nil {
		ln.Close()
		return err
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return bg },
	}
	scheme := "http"
	if tlsCfg != nil {
		hs.TLSConfig = tlsCfg
		scheme = "https"
	}
	url := fmt.Sprintf("%s://%s", scheme, ln.Addr())
	fmt.Fprintf(s.cfg.Out, "fleetpass is serving at %s\n", url)
	if fingerprint != "" {
		fmt.Fprintf(s.cfg.Out, "TLS certificate SHA-256 fingerprint: %s\n", fingerprint)
	}
	s.log.Info("serving", "url", url, "data_dir", s.cfg.DataDir)
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cancelBG() // ends event streams and waits, so Shutdown need not wait for them
	if err := hs.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
	}
	if err := s.engine.Stop(sctx); err != nil {
		s.log.Warn("engine shutdown", "err", err)
	}
	s.leaveCluster()
	return nil
}

// Close releases the database, the simulated fleet and the data-dir lock.
func (s *Server) Close() error {
	if s.engine != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.engine.Stop(ctx)
		cancel()
	}
	s.waitHosts()
	s.leaveCluster()
	s.closeAll()
	return nil
}

func (s *Server) closeAll() {
	if s.ipmi != nil {
		s.ipmi.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.sim != nil {
		s.sim.Close()
	}
	if s.lock != nil {
		s.lock.Close()
	}
}

// Credentials is the JSON of <data-dir>/admin-credentials.
type Credentials struct {
	KeyID  string `json:"keyId"`
	Secret string `json:"secret"`
	Server string `json:"server,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// bootstrap creates the first admin key on an empty database and writes it
// to <data-dir>/admin-credentials (mode 0600). It prints the path, never the
// secret. FLEETPASS_ADMIN_KEY_ID/SECRET, if set, are used instead of random
// ones (automation).
func (s *Server) bootstrap(ctx context.Context) error {
	n, err := s.svc.CountKeys(ctx)
	if err != nil {
		return err
	}
	path := filepath.Join(s.cfg.DataDir, "admin-credentials")
	if n > 0 {
		if _, err := os.Stat(path); err == nil {
			fmt.Fprintf(s.cfg.Out, "admin credentials: %s\n", path)
		}
		return nil
	}
	id, secret := core.NewKeyMaterial()
	givenID, givenSecret := s.cfg.AdminKeyID, s.cfg.AdminKeySecret
	if givenID == "" && givenSecret == "" {
		givenID, givenSecret = os.Getenv("FLEETPASS_ADMIN_KEY_ID"), os.Getenv("FLEETPASS_ADMIN_KEY_SECRET")
	}
	if givenID != "" || givenSecret != "" {
		if givenID == "" || givenSecret == "" || len(givenSecret) < 16 {
			return errors.New("FLEETPASS_ADMIN_KEY_ID and FLEETPASS_ADMIN_KEY_SECRET must be set together, the secret at least 16 characters")
		}
		id, secret = givenID, givenSecret
	}
	if err := s.svc.InsertKey(ctx, id, secret, core.AdminTenant, "bootstrap admin", true); err != nil {
		return fmt.Errorf("bootstrap admin key: %w", err)
	}
	data, _ := json.MarshalIndent(Credentials{KeyID: id, Secret: secret, Server: s.publicURL(), Tenant: core.AdminTenant}, "", "  ")
	if err := writePrivate(path, append(data, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(s.cfg.Out, "created the admin API key; its credentials are in %s (mode 0600)\n", path)
	return nil
}

func (s *Server) publicURL() string {
	host, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if s.cfg.TLSCert != "" || !isLoopback(host) {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// writePrivate writes a file only its owner can read, atomically.
func writePrivate(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

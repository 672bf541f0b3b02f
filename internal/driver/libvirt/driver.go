// Package libvirt is fleetpass's driver for virtual machines managed by
// libvirt (QEMU/KVM domains): it switches them on and off (driver.Power),
// reaches their QEMU guest agent through libvirt to ping it and set
// passwords (driver.Guest), and tells the engine beforehand when a domain
// has no guest agent channel at all (driver.Preflighter).
//
// A Driver keeps one connection per libvirt host, reconnecting with
// backoff when it drops (a libvirtd restart, a network outage), and reports
// what changes on its hosts through Changes so that the inventory can
// follow domains being defined, started and stopped. A driver.Ref names a
// domain by its host's id (Ref.Host) and the domain's UUID (Ref.Address).
//
// A host set OnDemand is not followed: the driver connects when a call
// needs the host, subscribes to no events, sends no Changes and closes the
// connection once it has been idle for Config.IdleTimeout. With several
// fleetpass replicas, one follows each host and the others act on it on
// demand.
//
// Calls on a host that is not connected fail with a driver.TransientError,
// which the engine retries with backoff, so an operation survives a libvirtd
// restart. An empty Ref.Host means the only host, when there is exactly one.
//
// Connection URIs (see SetHost):
//
//	qemu:///system                       local libvirtd (?socket=PATH to override)
//	qemu+unix:///system?socket=PATH      local libvirtd on another socket
//	qemu+ssh://[user@]host[:port]/system through SSH, public key only:
//	                                     ?keyfile= (default ~/.ssh/id_ed25519, then id_rsa),
//	                                     ?known_hosts= (default ~/.ssh/known_hosts),
//	                                     ?no_verify=1 skips the host key check,
//	                                     ?socket= the remote libvirtd socket
//	qemu+tls://host[:port]/system        TLS (port 16514) with a client certificate:
//	                                     ?pkipath=DIR (cacert.pem, clientcert.pem,
//	                                     clientkey.pem; default /etc/pki/...),
//	                                     ?no_verify=1 skips the server certificate check
//	test:///default                      libvirt's mock driver, for tests; also with
//	                                     +unix, +ssh and +tls
//
// go-libvirt's calls take no context. The driver bounds each with
// Config.CallTimeout and the caller's context; a call given up on finishes
// in the background, or fails when the connection closes.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// Config tunes the driver; zero values take defaults.
type Config struct {
	// Log receives connect and disconnect lines. Nil discards them.
	Log *slog.Logger
	// DialTimeout bounds opening a connection (TCP, SSH, TLS). Default 10s.
	DialTimeout time.Duration
	// CallTimeout bounds each libvirt call. Default 30s.
	CallTimeout time.Duration
	// AgentTimeout bounds the wait for the guest agent. Zero means 3s for
	// guest-ping and 60s for setting a password (chpasswd in a busy guest
	// can take a while); any other value is used for both.
	AgentTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// connection attempts. Default 500ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// ResyncInterval is the period of the full-resync Change each
	// connected host sends, and of its connection health check. Default
	// 60s.
	ResyncInterval time.Duration
	// IdleTimeout is how long an OnDemand host's connection stays open
	// after its last call. Default 10m.
	IdleTimeout time.Duration
	// Disk, when set, lets the driver reset passwords of shut-off domains
	// on the local host by editing their disks (driver.DiskEditor); nil
	// leaves disk resets unavailable, for the reason DiskUnavailable gives.
	Disk            DiskResetter
	DiskUnavailable string
	// Lookup, when set, finds a host the driver was not told about: one
	// added a moment ago through another replica, whose notice has not
	// reached this one. The driver adds it on demand instead of failing
	// the call as an unknown host. It reports false for no such host.
	Lookup func(ctx context.Context, id string) (Host, bool, error)
}

// Defaults for Config's zero fields.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultCallTimeout = 30 * time.Second
	// DefaultPingTimeout is short because a ping sent while a booting
	// guest's agent starts can go unanswered (libvirt's guest-sync reaches
	// the channel before qemu-ga reads it); the caller pings again sooner
	// with a short timeout. Measured: a 10 s timeout made one offline
	// reset in three wait 20 s more for the guest than the VM needed.
	DefaultPingTimeout     = 3 * time.Second
	DefaultPasswordTimeout = 60 * time.Second
	DefaultReconnectMin    = 500 * time.Millisecond
	DefaultReconnectMax    = 30 * time.Second
	DefaultResyncInterval  = 60 * time.Second
	DefaultIdleTimeout     = 10 * time.Minute
)

const (
	// defaultChangesBuffer is the capacity of the Changes channel: enough
	// for a burst of lifecycle events from a host starting many domains.
	defaultChangesBuffer = 1024
	// pendingResyncRetryDelay is how often a host retries sending the
	// resync that covers changes dropped on a full channel.
	pendingResyncRetryDelay = time.Second
)

// Host is one libvirt host the driver connects to.
type Host struct {
	// ID is fleetpass's id of the host: the Host field of a driver.Ref.
	ID string
	// URI is the libvirt connection URI: qemu:///system,
	// qemu+unix:///system?socket=PATH, qemu+ssh://[user@]host[:port]/system,
	// qemu+tls://host[:port]/system, or test:///default (libvirt's mock
	// driver, for tests). See SetHost.
	URI string
	// OnDemand leaves the host unfollowed: connected only while calls
	// need it, with no lifecycle events and no Changes (another replica
	// follows it).
	OnDemand bool
}

// HostStatus is the state of a host's connection.
type HostStatus struct {
	Connected bool
	// Error is the last connection error while not connected (it holds no
	// secrets: URIs with passwords are refused).
	Error string
	// Since is when the connection was last established or lost.
	Since time.Time
	// LibvirtVersion is the daemon's libvirt version while connected,
	// e.g. "9.0.0".
	LibvirtVersion string
}

// Domain is one libvirt domain as Domains lists it.
type Domain struct {
	// UUID in canonical lowercase 8-4-4-4-12 form: a driver.Ref's Address.
	UUID  string
	Name  string
	State driver.PowerState
	// OSType is "linux" or "windows" as the domain's fleetpass metadata
	// says (<fleetpass:instance><os>), else as its libosinfo metadata
	// says, else "".
	OSType string
	// AgentChannel tells whether the domain has a QEMU guest agent
	// channel (target name org.qemu.guest_agent.0).
	AgentChannel bool
}

// Change tells that something changed on a host.
type Change struct {
	HostID string
	// UUID is the domain that changed; "" asks for a resync of the whole
	// host (after a connect or reconnect, periodically, and after changes
	// were dropped because nobody read them).
	UUID string
	// Connected is the host's connection state when the change was sent.
	Connected bool
}

// Driver is a driver.Power, driver.Guest and driver.Preflighter for
// libvirt domains on any number of hosts. Create it with New, add hosts
// with SetHost and call Run.
type Driver struct {
	cfg             Config
	log             *slog.Logger
	pingTimeout     time.Duration
	passwordTimeout time.Duration
	changes         chan Change

	// shutdowns tracks shutdowns through the guest agent by host/UUID.
	shutdownMu sync.Mutex
	shutdowns  map[string]int

	mu      sync.Mutex
	hosts   map[string]*host
	runCtx  context.Context // set by Run; nil before
	stopped bool            // Run has returned or is returning
	wg      sync.WaitGroup  // host loops
}

var (
	_ driver.Power       = (*Driver)(nil)
	_ driver.Guest       = (*Driver)(nil)
	_ driver.Preflighter = (*Driver)(nil)
)

// host is one host's connection state. Its loop owns the connection; calls
// borrow it under mu.
type host struct {
	id       string
	t        target
	onDemand bool
	cancel   context.CancelFunc // stops the loop; nil until started

	mu            sync.Mutex
	conn          *lv.Libvirt // nil while not connected
	status        HostStatus
	resyncPending bool // a Change was dropped: a resync must follow
	// On demand: lastUsed is the last call's time; ready, while a session
	// runs, is closed once its connection attempt ended; failedAt is when
	// the last attempt failed.
	lastUsed time.Time
	ready    chan struct{}
	failedAt time.Time
}

// New returns a Driver with cfg's zero fields set to their defaults.
func New(cfg Config) *Driver {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, DefaultDialTimeout)
	def(&cfg.CallTimeout, DefaultCallTimeout)
	def(&cfg.ReconnectMin, DefaultReconnectMin)
	def(&cfg.ReconnectMax, DefaultReconnectMax)
	def(&cfg.ResyncInterval, DefaultResyncInterval)
	def(&cfg.IdleTimeout, DefaultIdleTimeout)
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = cfg.ReconnectMin
	}
	d := &Driver{
		cfg:             cfg,
		log:             cfg.Log,
		pingTimeout:     cfg.AgentTimeout,
		passwordTimeout: cfg.AgentTimeout,
		changes:         make(chan Change, defaultChangesBuffer),
		shutdowns:       map[string]int{},
		hosts:           make(map[string]*host),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if cfg.AgentTimeout <= 0 {
		d.pingTimeout, d.passwordTimeout = DefaultPingTimeout, DefaultPasswordTimeout
	}
	return d
}

// Run keeps the hosts' connections until ctx ends, then closes them and
// returns. Hosts may be added before or while Run runs. Call Run once.
func (d *Driver) Run(ctx context.Context) {
	d.mu.Lock()
	if d.runCtx != nil {
		d.mu.Unlock()
		d.log.Error("libvirt: Run called twice; ignoring the second call")
		return
	}
	d.runCtx = ctx
	for _, h := range d.hosts {
		if !h.onDemand {
			d.start(h)
		}
	}
	d.mu.Unlock()

	<-ctx.Done()
	d.mu.Lock()
	d.stopped = true
	for _, h := range d.hosts {
		if h.cancel != nil {
			h.cancel()
		}
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// start starts h's connection loop. d.mu must be held.
func (d *Driver) start(h *host) {
	ctx, cancel := context.WithCancel(d.runCtx)
	h.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.loop(ctx, h)
	}()
}

// SetHost adds a host or replaces the one with the same ID, and starts
// connecting to it (once Run runs) unless it is OnDemand. It fails on an
// empty ID or a URI the driver cannot use; the error says why. Setting a
// host to the URI and mode it already has changes nothing; changing its
// mode reconnects it in the new one.
func (d *Driver) SetHost(h Host) error {
	if h.ID == "" {
		return errors.New("libvirt: empty host id")
	}
	t, err := parseURI(h.URI)
	if err != nil {
		return fmt.Errorf("libvirt: host %s: %w", h.ID, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.hosts[h.ID]; ok {
		if old.t == t && old.onDemand == h.OnDemand {
			return nil
		}
		if old.cancel != nil {
			old.cancel()
		}
	}
	nh := &host{id: h.ID, t: t, onDemand: h.OnDemand, status: HostStatus{Error: "not connected yet", Since: time.Now()}}
	if h.OnDemand {
		nh.status.Error = "connected on demand; not connected now"
	}
	d.hosts[h.ID] = nh
	if d.runCtx != nil && !d.stopped && !h.OnDemand {
		d.start(nh)
	}
	return nil
}

// ValidateURI tells whether the driver can use uri, without connecting.
func ValidateURI(uri string) error {
	_, err := parseURI(uri)
	return err
}

// HostIDs lists the ids of the hosts the driver knows, followed or on
// demand.
func (d *Driver) HostIDs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.hosts))
}

// RemoveHost forgets a host and closes its connection. Unknown ids are
// ignored.
func (d *Driver) RemoveHost(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h, ok := d.hosts[id]; ok {
		if h.cancel != nil {
			h.cancel()
		}
		delete(d.hosts, id)
	}
}

// HostStatus returns the state of a host's connection. For an unknown id it
// returns a status whose Error says so.
func (d *Driver) HostStatus(id string) HostStatus {
	d.mu.Lock()
	h, ok := d.hosts[id]
	d.mu.Unlock()
	if !ok {
		return HostStatus{Error: "unknown host"}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status
}

// Changes returns the channel of changes on the hosts. The driver never
// waits for a reader: when the buffer is full it drops changes and sends a
// resync of the host as soon as there is room again.
func (d *Driver) Changes() <-chan Change {
	return d.changes
}

// emit sends c without blocking. A change that does not fit is dropped and
// remembered as a pending resync of the host, which covers it.
func (d *Driver) emit(h *host, c Change) {
	if h.onDemand {
		return // another replica follows the host
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.resyncPending {
		// The resync, sent now, covers c as well.
		d.sendResyncLocked(h)
		return
	}
	select {
	case d.changes <- c:
	default:
		h.resyncPending = true
	}
}

// sendResyncLocked tries to send a pending resync. h.mu must be held.
func (d *Driver) sendResyncLocked(h *host) {
	select {
	case d.changes <- Change{HostID: h.id, Connected: h.status.Connected}:
		h.resyncPending = false
	default:
	}
}

// loop connects to h until ctx ends, waiting with exponential backoff and
// jitter between attempts.
func (d *Driver) loop(ctx context.Context, h *host) {
	backoff := d.cfg.ReconnectMin
	for {
		began := time.Now()
		connected := d.session(ctx, h)
		if ctx.Err() != nil {
			return
		}
		// A connection that held for a while was a good one: try again
		// soon. One that dropped at once may be a daemon in trouble.
		if connected && time.Since(began) >= d.cfg.ReconnectMax {
			backoff = d.cfg.ReconnectMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		d.log.Debug("libvirt: reconnecting", "host", h.id, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
		backoff = min(2*backoff, d.cfg.ReconnectMax)
	}
}

// session connects to h once and serves the connection until it drops or
// ctx ends. It reports whether it got connected.
func (d *Driver) session(ctx context.Context, h *host) bool {
	uri := h.t.String()
	l, nc, version, err := d.connect(ctx, h.t)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		h.mu.Lock()
		first := h.status.Error != err.Error()
		h.status = HostStatus{Error: err.Error(), Since: time.Now()}
		h.failedAt = time.Now()
		h.markReadyLocked()
		h.mu.Unlock()
		if first {
			// Once per distinct error, not at every retry.
			d.log.Warn("libvirt: cannot connect", "host", h.id, "uri", uri, "err", err)
		}
		return false
	}
	// go-libvirt does not close the stream when the daemon hangs up.
	defer nc.Close()

	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	var events <-chan lv.DomainEventLifecycleMsg
	if !h.onDemand {
		events, err = await(ctx, d.cfg.CallTimeout, func() (<-chan lv.DomainEventLifecycleMsg, error) {
			return l.LifecycleEvents(evCtx)
		})
		if err != nil {
			// Periodic resyncs still keep the inventory right, only later.
			d.log.Warn("libvirt: no lifecycle events", "host", h.id, "uri", uri, "err", err)
			events = nil
		}
	}
	if events != nil {
		defer func(events <-chan lv.DomainEventLifecycleMsg) {
			// go-libvirt's event goroutine blocks sending an event nobody
			// reads; drain until it closes the channel, which it does once
			// the connection is closed.
			go func() {
				for range events {
				}
			}()
		}(events)
	}

	h.mu.Lock()
	h.conn = l
	h.status = HostStatus{Connected: true, Since: time.Now(), LibvirtVersion: version}
	h.markReadyLocked()
	h.mu.Unlock()
	if h.onDemand {
		d.log.Debug("libvirt: connected on demand", "host", h.id, "uri", uri, "libvirt", version)
	} else {
		d.log.Info("libvirt: connected", "host", h.id, "uri", uri, "libvirt", version)
	}
	d.emit(h, Change{HostID: h.id, Connected: true})

	resync := time.NewTicker(d.cfg.ResyncInterval)
	defer resync.Stop()
	retry := time.NewTicker(pendingResyncRetryDelay)
	defer retry.Stop()
	var idle <-chan time.Time
	if h.onDemand {
		t := time.NewTicker(max(d.cfg.IdleTimeout/4, 10*time.Millisecond))
		defer t.Stop()
		idle = t.C
	}
	var lost error
	for lost == nil {
		select {
		case <-idle:
			h.mu.Lock()
			unused := time.Since(h.lastUsed) >= d.cfg.IdleTimeout
			if unused {
				h.conn = nil
				h.status = HostStatus{Error: "connected on demand; closed after being idle", Since: time.Now()}
			}
			h.mu.Unlock()
			if unused {
				d.log.Debug("libvirt: closing an idle on-demand connection", "host", h.id, "uri", uri)
				return true
			}
		case <-ctx.Done():
			h.mu.Lock()
			h.conn = nil
			h.status = HostStatus{Error: "driver stopped", Since: time.Now()}
			h.mu.Unlock()
			d.log.Info("libvirt: disconnecting", "host", h.id, "uri", uri)
			return true
		case <-l.Disconnected():
			lost = errors.New("connection to libvirtd lost")
		case ev, ok := <-events:
			if !ok {
				// Closed when the connection drops; if it is still up,
				// the resyncs carry on alone.
				events = nil
				continue
			}
			d.emit(h, Change{HostID: h.id, UUID: formatUUID(ev.Dom.UUID), Connected: true})
		case <-resync.C:
			// Also a health check: a daemon that hangs, or a network that
			// dropped without a reset, does not close the socket.
			if _, err := await(ctx, d.cfg.CallTimeout, l.ConnectGetLibVersion); err != nil {
				if ctx.Err() != nil {
					continue
				}
				lost = fmt.Errorf("health check: %w", err)
				continue
			}
			d.emit(h, Change{HostID: h.id, Connected: true})
		case <-retry.C:
			if h.onDemand {
				continue
			}
			h.mu.Lock()
			if h.resyncPending {
				d.sendResyncLocked(h)
			}
			h.mu.Unlock()
		}
	}
	h.mu.Lock()
	h.conn = nil
	h.status = HostStatus{Error: lost.Error(), Since: time.Now()}
	h.mu.Unlock()
	d.log.Warn("libvirt: disconnected", "host", h.id, "uri", uri, "err", lost)
	d.emit(h, Change{HostID: h.id, Connected: false})
	return true
}

// connect dials t, opens its hypervisor driver and reads the daemon's
// version. The caller closes nc once done with l.
func (d *Driver) connect(ctx context.Context, t target) (*lv.Libvirt, net.Conn, string, error) {
	nc, err := dial(ctx, t, d.cfg.DialTimeout)
	if err != nil {
		return nil, nil, "", fmt.Errorf("dial: %w", err)
	}
	// One Libvirt per connection: a reconnect starts afresh, with no
	// state of the lost connection left behind.
	l := lv.NewWithDialer(dialers.NewAlreadyConnected(nc))
	if _, err := await(ctx, d.cfg.CallTimeout, func() (struct{}, error) {
		return struct{}{}, l.ConnectToURI(lv.ConnectURI(t.driverURI))
	}); err != nil {
		nc.Close() // also ends a call await gave up on
		return nil, nil, "", fmt.Errorf("open %s: %w", t.driverURI, err)
	}
	v, err := await(ctx, d.cfg.CallTimeout, l.ConnectGetLibVersion)
	if err != nil {
		nc.Close()
		return nil, nil, "", fmt.Errorf("read libvirt version: %w", err)
	}
	// libvirt encodes versions as major*1e6 + minor*1e3 + release.
	version := fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
	return l, nc, version, nil
}

// errNoAnswer marks a libvirt call that took longer than CallTimeout.
var errNoAnswer = errors.New("no answer from libvirtd")

// await runs fn aside and returns its result, or an error once ctx ends or
// timeout passes. go-libvirt's calls take no context; a call given up on
// ends in the background when its answer arrives or the connection closes,
// and its result is dropped. Running out of timeout (rather than ctx) gives
// a transient error: the daemon may just be busy.
func await[T any](ctx context.Context, timeout time.Duration, fn func() (T, error)) (T, error) {
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-callCtx.Done():
		var zero T
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
		return zero, driver.Transientf("%w within %v", errNoAnswer, timeout)
	}
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Domains lists all domains of a host, running or not. An unknown host
// gives an error wrapping driver.ErrMachineNotFound, a host that is not
// connected a driver.TransientError.
func (d *Driver) Domains(ctx context.Context, hostID string) ([]Domain, error) {
	h, l, err := d.host(ctx, hostID)
	if err != nil {
		return nil, err
	}
	what := "host " + h.id + ": list domains"
	doms, err := await(ctx, d.cfg.CallTimeout, func() ([]lv.Domain, error) {
		doms, _, err := l.ConnectListAllDomains(1, lv.ConnectListDomainsActive|lv.ConnectListDomainsInactive)
		return doms, err
	})
	if err != nil {
		return nil, classify("libvirt: "+what, err)
	}
	out := make([]Domain, 0, len(doms))
	for _, dom := range doms {
		dm := Domain{UUID: formatUUID(dom.UUID), Name: dom.Name}
		st, err := d.rawState(ctx, l, dom)
		if code, _ := libvirtCode(err); code == lv.ErrNoDomain {
			continue // undefined since the listing
		}
		if err != nil {
			return nil, classify("libvirt: "+what+": domain "+dm.UUID+": read state", err)
		}
		dm.State = mapState(st.state, st.reason)
		x, err := await(ctx, d.cfg.CallTimeout, func() (string, error) {
			return l.DomainGetXMLDesc(dom, 0)
		})
		if code, _ := libvirtCode(err); code == lv.ErrNoDomain {
			continue
		}
		if err != nil {
			return nil, classify("libvirt: "+what+": domain "+dm.UUID+": read XML", err)
		}
		info, err := parseDomainXML([]byte(x))
		if err != nil {
			// Listed all the same: the state is right, the rest unknown.
			d.log.Warn("libvirt: unreadable domain XML", "host", h.id, "domain", dm.UUID, "err", err)
		}
		dm.OSType, dm.AgentChannel = info.OSType, info.AgentChannel
		out = append(out, dm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// host returns a host and its connection, connecting an OnDemand host
// first (waiting for it at most until ctx ends). An empty id means the
// only host, when there is exactly one.
func (d *Driver) host(ctx context.Context, id string) (*host, *lv.Libvirt, error) {
	h, l, err := d.knownHost(ctx, id)
	if !errors.Is(err, errUnknownHost) || id == "" || d.cfg.Lookup == nil {
		return h, l, err
	}
	found, ok, lerr := d.cfg.Lookup(ctx, id)
	if lerr != nil {
		return nil, nil, driver.Transientf("libvirt: look up host %q: %w", id, lerr)
	}
	if !ok {
		return nil, nil, err
	}
	if err := d.addOnDemand(found); err != nil {
		return nil, nil, err
	}
	return d.knownHost(ctx, id)
}

// errUnknownHost is a host the driver does not know.
var errUnknownHost = errors.New("unknown host")

// addOnDemand adds h, connected on demand, unless the driver knows it by
// then (the pass that follows the hosts table may have added it
// meanwhile, in the mode it chose: that one stays).
func (d *Driver) addOnDemand(h Host) error {
	t, err := parseURI(h.URI)
	if err != nil {
		return fmt.Errorf("libvirt: host %s: %w", h.ID, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.hosts[h.ID]; !ok {
		d.hosts[h.ID] = &host{id: h.ID, t: t, onDemand: true,
			status: HostStatus{Error: "connected on demand; not connected now", Since: time.Now()}}
	}
	return nil
}

func (d *Driver) knownHost(ctx context.Context, id string) (*host, *lv.Libvirt, error) {
	d.mu.Lock()
	h, ok := d.hosts[id]
	if !ok && id == "" && len(d.hosts) == 1 {
		for _, only := range d.hosts {
			h, ok = only, true
		}
	}
	if !ok {
		d.mu.Unlock()
		return nil, nil, fmt.Errorf("libvirt: %w %q: %w", errUnknownHost, id, driver.ErrMachineNotFound)
	}
	h.mu.Lock()
	if h.conn != nil {
		h.lastUsed = time.Now()
		l := h.conn
		h.mu.Unlock()
		d.mu.Unlock()
		return h, l, nil
	}
	// A host that failed to connect a moment ago fails again at once,
	// rather than each call of a burst dialling it.
	recent := h.ready == nil && time.Since(h.failedAt) < d.cfg.ReconnectMin
	if !h.onDemand || d.runCtx == nil || d.stopped || recent {
		err := driver.Transientf("libvirt: host %s: %w (%s)", h.id, errDisconnected, h.status.Error)
		h.mu.Unlock()
		d.mu.Unlock()
		return nil, nil, err
	}
	h.lastUsed = time.Now()
	ready := d.demandLocked(h)
	h.mu.Unlock()
	d.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return nil, nil, driver.Transientf("libvirt: host %s: %w (%s)", h.id, errDisconnected, h.status.Error)
	}
	h.lastUsed = time.Now()
	return h, h.conn, nil
}

// demandLocked starts an OnDemand host's session unless one runs, and
// returns the channel closed once its connection attempt ended. d.mu and
// h.mu must be held.
func (d *Driver) demandLocked(h *host) <-chan struct{} {
	if h.ready != nil {
		return h.ready
	}
	ready := make(chan struct{})
	h.ready = ready
	ctx, cancel := context.WithCancel(d.runCtx)
	h.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer cancel()
		d.session(ctx, h)
		h.mu.Lock()
		h.markReadyLocked()
		h.ready = nil
		h.mu.Unlock()
	}()
	return ready
}

// markReadyLocked tells the callers waiting for an OnDemand host's
// connection attempt that it ended. h.mu must be held.
func (h *host) markReadyLocked() {
	if h.ready == nil {
		return
	}
	select {
	case <-h.ready:
	default:
		close(h.ready)
	}
}

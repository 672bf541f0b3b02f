// Package metrics defines fleetpass's Prometheus metrics. A Metrics value is
// made per server (no global registry), so tests can run several servers in
// one process.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the server's collectors.
type Metrics struct {
	Registry *prometheus.Registry
	// Registerer registers into Registry with the metrics' constant labels
	// (the replica id): register collectors through it.
	Registerer prometheus.Registerer

	Operations   *prometheus.CounterVec   // kind, status (at the end)
	Items        *prometheus.CounterVec   // kind, result, code
	StepDuration *prometheus.HistogramVec // kind, step
	ItemDuration *prometheus.HistogramVec // kind, result
	HTTPRequests *prometheus.CounterVec   // dialect, route, code
	HTTPDuration *prometheus.HistogramVec // dialect, route
	RateLimited  *prometheus.CounterVec   // dialect
	// Superseded counts item executions stopped by their item's fencing
	// token (another execution took the item), Reaped the jobs of dead
	// replicas made available again.
	Superseded prometheus.Counter
	Reaped     prometheus.Counter
}

// New makes the collectors and registers them, with Go and process metrics,
// in a fresh registry.
func New() *Metrics { return NewWithLabels(nil) }

// NewWithLabels is New with constant labels on every series: the replica
// id, so the series of several replicas stay apart when federated.
func NewWithLabels(labels prometheus.Labels) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetpass_operations_total", Help: "Operations ended, by kind and final status.",
		}, []string{"kind", "status"}),
		Items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetpass_items_total", Help: "Operation items ended, by kind, result and error code.",
		}, []string{"kind", "result", "code"}),
		StepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetpass_step_duration_seconds",
			Help:    "Time an item spent in each step, by operation kind and step.",
			Buckets: []float64{0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"kind", "step"}),
		ItemDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetpass_item_duration_seconds",
			Help:    "Time from an item's start to its end, by kind and result.",
			Buckets: []float64{0.01, 0.05, 0.25, 1, 5, 15, 30, 60, 120, 300, 600},
		}, []string{"kind", "result"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetpass_http_requests_total", Help: "HTTP requests answered, by dialect, route and status code.",
		}, []string{"dialect", "route", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetpass_http_request_duration_seconds", Help: "HTTP request latency by dialect and route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"dialect", "route"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetpass_rate_limited_total", Help: "Requests refused by a rate limit, by dialect.",
		}, []string{"dialect"}),
		Superseded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetpass_item_executions_superseded_total",
			Help: "Item executions stopped because a newer execution (after a takeover) holds the item's fencing token.",
		}),
		Reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetpass_jobs_resumed_from_dead_replicas_total",
			Help: "Running jobs of dead or unknown replicas made available again by this replica.",
		}),
	}
	m.Registerer = prometheus.WrapRegistererWith(labels, m.Registry)
	m.Registerer.MustRegister(m.Operations, m.Items, m.StepDuration, m.ItemDuration, m.HTTPRequests, m.HTTPDuration,
		m.RateLimited, m.Superseded, m.Reaped, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// GaugeFunc registers a gauge computed at scrape time (queue depth, counts).
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registerer.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

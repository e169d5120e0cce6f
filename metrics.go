package iris

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/prometheus/client_golang/prometheus"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns the mount's Prometheus figures: one registry per mount (one
// process serves every mount, so never the global registry), the counters
// the grant, lease and background code bump, and the fleet view that both
// metrics/ and the mount-wide status/ compute from storage and the grant
// book at read time.
//
// Label values are credential names, kinds, grant types and fixed outcome
// words: never a token, a secret, a client ID or a username.

const metricsNamespace = "iris"

// Grant outcomes, as the grants counter labels them.
const (
	outcomeSuccess        = "success"
	outcomeRefused        = "refused"
	outcomeRateLimited    = "rate_limited"
	outcomeUnavailable    = "unavailable"
	outcomeOutcomeUnknown = "outcome_unknown"
)

// grantOutcome maps a grant's error to the outcome the metrics count:
// refused (IRIS answered with an OAuth error), rate_limited (429),
// outcome_unknown (the request went out and no usable answer came back in
// time, so IRIS may have issued a token) and unavailable (everything else
// that failed: no connection, a 5xx, an unusable answer).
func grantOutcome(err error) string {
	if err == nil {
		return outcomeSuccess
	}
	var e *irisauth.Error
	if !errors.As(err, &e) {
		return outcomeUnavailable
	}
	switch {
	case e.Kind == irisauth.KindRejected:
		return outcomeRefused
	case e.Kind == irisauth.KindUnavailable && e.Status == http.StatusTooManyRequests:
		return outcomeRateLimited
	case (e.Kind == irisauth.KindTimeout || e.Kind == irisauth.KindUnreachable) && e.Sent:
		return outcomeOutcomeUnknown
	}
	return outcomeUnavailable
}

// Help texts end with where a figure comes from: "per process" figures are
// counted in memory by the node serving the mount and start afresh when the
// plugin restarts or another node becomes active; "from storage" figures
// survive both.
const (
	perProcess  = " (per process: reset by a plugin restart or a leader change)"
	fromStorage = " (from storage)"
)

// mountMetrics is the mount's registry and the collectors code paths bump.
type mountMetrics struct {
	registry *prometheus.Registry

	grants               *prometheus.CounterVec
	refreshTokensDropped *prometheus.CounterVec
	leasesIssued         *prometheus.CounterVec
	leasesRenewed        *prometheus.CounterVec
	leasesRevoked        *prometheus.CounterVec
	backgroundPasses     prometheus.Histogram
	grantsInFlight       prometheus.Gauge
	rateLimited          prometheus.Counter

	// lastScrapeSize sizes the next scrape's buffer.
	lastScrapeSize atomic.Int64

	// refusals remembers, per credential name, when IRIS refused its
	// grants within the last hour.
	mu       sync.Mutex
	refusals map[string][]time.Time
}

func newMountMetrics(b *backend) *mountMetrics {
	m := &mountMetrics{
		registry: prometheus.NewRegistry(),
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "grants_total",
			Help: "Grants sent to IRIS, by credential kind, grant type and outcome (success, refused, rate_limited, unavailable, outcome_unknown); grants a hold kept back are not sent and not counted" + perProcess + ".",
		}, []string{"kind", "grant_type", "outcome"}),
		refreshTokensDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "refresh_tokens_dropped_total",
			Help: "Refresh tokens given up on, by reason: refused (IRIS refused it) or outcome_unknown (the answer was lost, so IRIS may have spent it); a password grant replaces each" + perProcess + ".",
		}, []string{"reason"}),
		leasesIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "leases_issued_total",
			Help: "Leases issued by creds/, by credential kind" + perProcess + ".",
		}, []string{"kind"}),
		leasesRenewed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "leases_renewed_total",
			Help: "Leases renewed, by credential kind" + perProcess + ".",
		}, []string{"kind"}),
		leasesRevoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "leases_revoked_total",
			Help: "Leases revoked: where=local counts every revocation (Vault drops the lease), where=remote those IRIS's revocation endpoint also confirmed" + perProcess + ".",
		}, []string{"where"}),
		backgroundPasses: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "background_pass_duration_seconds",
			Help:    "Time each background refresh pass took to find the due shared tokens (about one pass a minute, on the node that may write storage); its _count is the number of passes" + perProcess + ".",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		grantsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "grants_in_flight",
			Help: "Grants waiting on IRIS right now" + perProcess + ".",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "rate_limited_responses_total",
			Help: "HTTP 429 answers from IRIS token endpoints, retried attempts included" + perProcess + ".",
		}),
		refusals: make(map[string][]time.Time),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: "build_info",
		Help: "Always 1; the version label is the plugin's version.",
	}, []string{"version"})
	buildInfo.WithLabelValues(Version).Set(1)
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: "background_queued_sessions",
		Help: "Shared tokens due and queued for background replacement, not yet started" + perProcess + ".",
	}, func() float64 { return float64(b.refresher.queued()) })
	// Series with few, fixed label values start at zero, so that increase()
	// sees their first event.
	for _, reason := range []string{"refused", "outcome_unknown"} {
		m.refreshTokensDropped.WithLabelValues(reason)
	}
	for _, where := range []string{"local", "remote"} {
		m.leasesRevoked.WithLabelValues(where)
	}
	for kind := range credentialKinds {
		m.leasesIssued.WithLabelValues(kind)
		m.leasesRenewed.WithLabelValues(kind)
	}
	m.registry.MustRegister(m.grants, m.refreshTokensDropped, m.leasesIssued, m.leasesRenewed, m.leasesRevoked,
		m.backgroundPasses, m.grantsInFlight, m.rateLimited, buildInfo, queued)
	return m
}

// queued is how many names wait in the background queue.
func (r *backgroundRefresher) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// grantDone counts a grant that was sent, and remembers a refusal for the
// credential's refusals in the last hour.
func (m *mountMetrics) grantDone(name, kind string, grant irisauth.GrantType, err error, now time.Time) {
	if m.countGrant(kind, grant, err) != outcomeRefused {
		return
	}
	m.mu.Lock()
	m.refusals[name] = append(pruneBefore(m.refusals[name], now.Add(-grantWindow)), now)
	m.mu.Unlock()
}

func (m *mountMetrics) refusedLastHour(name string, now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	times := pruneBefore(m.refusals[name], now.Add(-grantWindow))
	if len(times) == 0 {
		delete(m.refusals, name)
		return 0
	}
	m.refusals[name] = times
	return len(times)
}

// forgetRefusalsExcept drops the refusals of names no longer configured.
func (m *mountMetrics) forgetRefusalsExcept(configured map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.refusals {
		if !configured[name] {
			delete(m.refusals, name)
		}
	}
}

// countGrant counts a grant sent, and returns its outcome.
func (m *mountMetrics) countGrant(kind string, grant irisauth.GrantType, err error) string {
	outcome := grantOutcome(err)
	m.grants.WithLabelValues(kind, string(grant), outcome).Inc()
	return outcome
}

// refreshTokenDropped counts a refresh token given up on.
func (m *mountMetrics) refreshTokenDropped(outcome irisauth.RefreshOutcome) {
	switch outcome {
	case irisauth.RefreshTokenRefused:
		m.refreshTokensDropped.WithLabelValues("refused").Inc()
	case irisauth.RefreshTokenOutcomeUnknown:
		m.refreshTokensDropped.WithLabelValues("outcome_unknown").Inc()
	}
}

// observeAttempt sees every failed attempt of the mount's IRIS client.
func (m *mountMetrics) observeAttempt(err *irisauth.Error) {
	if err.Kind == irisauth.KindUnavailable && err.Status == http.StatusTooManyRequests {
		m.rateLimited.Inc()
	}
}

// Credential states of the fleet view, in the order status/ checks them.
const (
	stateHealthy       = "healthy"
	stateHeld          = "held"
	stateFailing       = "failing"
	stateNoSharedToken = "no_shared_token"
	stateNeverRead     = "never_read"
)

var credentialStates = []string{stateHealthy, stateHeld, stateFailing, stateNoSharedToken, stateNeverRead}

// credentialFigures is what the fleet view knows of one credential.
type credentialFigures struct {
	name, kind string
	// from storage; zero without a current shared token
	expiresAt, refreshAt time.Time
	// per process
	lastSuccess, lastFailure time.Time
	failing                  bool
	heldUntil                time.Time
	refusedLastHour          int
	read                     bool // token/ read since the shared token was obtained
	everRead                 bool // token/ read since the process started
	state                    string
}

// grantFigures is the fleet view's one look into the grant book.
func (b *backend) grantFigures(name string, cfg *credential, f *credentialFigures) {
	r := b.grants.report(name, cfg)
	f.lastSuccess, f.lastFailure, f.heldUntil = r.LastSuccess, r.LastFailure, r.HeldUntil
	f.failing = r.ConsecutiveFailures > 0
}

// fleet computes the figures of every configured credential, sorted by
// name. It reads storage through the caches, so after the first call it
// costs map look-ups.
func (b *backend) fleet(ctx context.Context, s logical.Storage) ([]credentialFigures, error) {
	names, err := listConfigNames(ctx, s)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	now := b.now()
	configured := make(map[string]bool, len(names))
	out := make([]credentialFigures, 0, len(names))
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cfg, err := b.config(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if cfg == nil {
			continue
		}
		configured[name] = true
		f := credentialFigures{name: name, kind: cfg.kind().name}
		sess, err := b.session(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if sess != nil && sess.Generation == cfg.Generation {
			f.expiresAt, f.refreshAt = sess.ExpiresAt, sess.refreshAt(cfg)
			f.read = b.refresher.readSince(name, sess.ObtainedAt)
		}
		f.everRead = b.refresher.everRead(name)
		b.grantFigures(name, cfg, &f)
		f.refusedLastHour = b.metrics.refusedLastHour(name, now)
		f.state = f.stateAt(now)
		out = append(out, f)
	}
	b.metrics.forgetRefusalsExcept(configured)
	return out, nil
}

// stateAt classifies the credential; the first that applies wins:
//
//	held             IRIS refused the credentials and new grants are held back
//	failing          the last grant sent for it failed
//	no_shared_token  token/ was read since the process started, but no
//	                 unexpired shared token is stored
//	never_read       no unexpired shared token is stored, and token/ was not
//	                 read since the process started (left to expire, or only
//	                 used through creds/)
//	healthy          an unexpired shared token is stored, and the last grant,
//	                 if any, succeeded
func (f *credentialFigures) stateAt(now time.Time) string {
	hasToken := !f.expiresAt.IsZero() && now.Before(f.expiresAt)
	switch {
	case !f.heldUntil.IsZero():
		return stateHeld
	case f.failing:
		return stateFailing
	case !hasToken && f.everRead:
		return stateNoSharedToken
	case !hasToken:
		return stateNeverRead
	}
	return stateHealthy
}

// behind: someone reads the shared token, and its refresh point has passed
// without the background refresh replacing it.
func (f *credentialFigures) behind(now time.Time) bool {
	return f.read && !f.refreshAt.IsZero() && !now.Before(f.refreshAt)
}

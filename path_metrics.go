package iris

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

func pathMetrics(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "metrics$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "read",
			OperationSuffix: "metrics",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: withFieldValidation(b.pathMetricsRead),
				Summary:  "The mount's figures in the Prometheus text format.",
			},
		},
		HelpSynopsis:    "Prometheus metrics of the mount, without any secret or token.",
		HelpDescription: strings.TrimSpace(metricsHelp),
	}}
}

const metricsHelp = `
Answers the mount's figures in the Prometheus text exposition format, for a
Prometheus server scraping with a Vault token (Authorization: Bearer). The
token needs read on this path only; labels carry credential names and kinds,
never a token, a secret, a client ID or a username.

Per credential (labels name and kind; left out when the mount setting
metrics_per_credential is false):
  iris_credential_token_expiry_timestamp_seconds   from storage
  iris_credential_token_refresh_timestamp_seconds  from storage
  iris_credential_last_success_timestamp_seconds   per process
  iris_credential_last_failure_timestamp_seconds   per process
  iris_credential_grants_held                      per process (1 while held)
  iris_credential_grants_held_until_timestamp_seconds  per process
  iris_credential_refused_last_hour                per process

Per mount: iris_credentials{state}, iris_background_behind_sessions,
iris_grants_total{kind,grant_type,outcome}, iris_refresh_tokens_dropped_total,
iris_leases_issued_total, iris_leases_renewed_total,
iris_leases_revoked_total{where}, iris_background_pass_duration_seconds,
iris_background_queued_sessions, iris_grants_in_flight,
iris_rate_limited_responses_total and iris_build_info.

"Per process" figures are counted in memory by the node answering and start
afresh when the plugin restarts or another node becomes active; figures
"from storage" survive both. Each HELP line says which a figure is.
`

// The figures computed at scrape time from the fleet view. They are built
// as metric families directly, not as collectors: at ten thousand
// credentials, const metrics and the registry's consistency checks cost
// more than the rest of the scrape.
type fleetFamily struct{ name, help string }

var (
	famTokenExpiry = fleetFamily{"iris_credential_token_expiry_timestamp_seconds",
		"When the credential's shared token (token/) expires, in Unix seconds; absent without one" + fromStorage + "."}
	famTokenRefresh = fleetFamily{"iris_credential_token_refresh_timestamp_seconds",
		"When the engine replaces the credential's shared token at the latest, in Unix seconds; absent without one" + fromStorage + "."}
	famLastSuccess = fleetFamily{"iris_credential_last_success_timestamp_seconds",
		"When a grant for the credential last succeeded, in Unix seconds; absent if none did" + perProcess + "."}
	famLastFailure = fleetFamily{"iris_credential_last_failure_timestamp_seconds",
		"When a grant for the credential last failed, in Unix seconds; absent if none did" + perProcess + "."}
	famHeld = fleetFamily{"iris_credential_grants_held",
		"1 while IRIS's refusal of the credential holds new grants back, else 0" + perProcess + "."}
	famHeldUntil = fleetFamily{"iris_credential_grants_held_until_timestamp_seconds",
		"While grants are held: when the next attempt may be made, in Unix seconds; absent otherwise" + perProcess + "."}
	famRefusedLastHour = fleetFamily{"iris_credential_refused_last_hour",
		"Grants for the credential IRIS refused in the last hour" + perProcess + "."}
	famCredentials = fleetFamily{"iris_credentials",
		"Configured credentials by state (healthy, held, failing, no_shared_token, never_read; see path-help status) from storage and per-process grant records" + perProcess + "."}
	famBehind = fleetFamily{"iris_background_behind_sessions",
		"Shared tokens read since they were obtained and now past their refresh point: the background refresh did not replace them in time" + perProcess + "."}
)

func (f fleetFamily) gauges(capacity int) *dto.MetricFamily {
	name, help := f.name, f.help
	return &dto.MetricFamily{Name: &name, Help: &help, Type: dto.MetricType_GAUGE.Enum(), Metric: make([]*dto.Metric, 0, capacity)}
}

func addGauge(mf *dto.MetricFamily, labels []*dto.LabelPair, v float64) {
	mf.Metric = append(mf.Metric, &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: &v}})
}

func labelPair(name, value string) *dto.LabelPair { return &dto.LabelPair{Name: &name, Value: &value} }

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// fleetFamilies renders the fleet view; per-credential families only when
// perCredential.
func fleetFamilies(figures []credentialFigures, now time.Time, perCredential bool) []*dto.MetricFamily {
	counts := make(map[string]int, len(credentialStates))
	behind := 0
	n := len(figures)
	if !perCredential {
		n = 0
	}
	expiry, refresh := famTokenExpiry.gauges(n), famTokenRefresh.gauges(n)
	success, failure := famLastSuccess.gauges(n), famLastFailure.gauges(0)
	held, heldUntil, refused := famHeld.gauges(n), famHeldUntil.gauges(0), famRefusedLastHour.gauges(n)
	for i := range figures {
		f := &figures[i]
		counts[f.state]++
		if f.behind(now) {
			behind++
		}
		if !perCredential {
			continue
		}
		// Sorted by label name, as the exposition format wants them.
		labels := []*dto.LabelPair{labelPair("kind", f.kind), labelPair("name", f.name)}
		stamp := func(mf *dto.MetricFamily, t time.Time) {
			if !t.IsZero() {
				addGauge(mf, labels, unixSeconds(t))
			}
		}
		stamp(expiry, f.expiresAt)
		stamp(refresh, f.refreshAt)
		stamp(success, f.lastSuccess)
		stamp(failure, f.lastFailure)
		isHeld := 0.0
		if !f.heldUntil.IsZero() {
			isHeld = 1
		}
		addGauge(held, labels, isHeld)
		stamp(heldUntil, f.heldUntil)
		addGauge(refused, labels, float64(f.refusedLastHour))
	}
	states := famCredentials.gauges(len(credentialStates))
	for _, state := range credentialStates {
		addGauge(states, []*dto.LabelPair{labelPair("state", state)}, float64(counts[state]))
	}
	behindFamily := famBehind.gauges(1)
	addGauge(behindFamily, nil, float64(behind))
	out := []*dto.MetricFamily{behindFamily, states}
	for _, mf := range []*dto.MetricFamily{expiry, refresh, success, failure, held, heldUntil, refused} {
		if len(mf.Metric) > 0 {
			out = append(out, mf)
		}
	}
	return out
}

// scrape renders the mount's metrics in the Prometheus text format.
func (b *backend) scrape(ctx context.Context, s logical.Storage) ([]byte, expfmt.Format, error) {
	figures, err := b.fleet(ctx, s)
	if err != nil {
		return nil, "", err
	}
	perCredential, err := b.metricsPerCredential(ctx, s)
	if err != nil {
		return nil, "", err
	}
	families, err := b.metrics.registry.Gather()
	if err != nil {
		return nil, "", err
	}
	families = append(families, fleetFamilies(figures, b.now(), perCredential)...)
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var buf bytes.Buffer
	buf.Grow(int(b.metrics.lastScrapeSize.Load()) + 4096)
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			return nil, "", err
		}
	}
	b.metrics.lastScrapeSize.Store(int64(buf.Len()))
	return buf.Bytes(), format, nil
}

func (b *backend) pathMetricsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	body, format, err := b.scrape(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		logical.HTTPContentType: string(format),
		logical.HTTPRawBody:     body,
		logical.HTTPStatusCode:  http.StatusOK,
	}}, nil
}

package iris

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/irisauth"
	"vault-plugin-secrets-iris/iristest"
)

// scrapeMetrics reads metrics/ as Prometheus would and parses the answer.
func (env *testEnv) scrapeMetrics() (map[string]*dto.MetricFamily, string) {
	env.t.Helper()
	resp := env.mustRequest(logical.ReadOperation, "metrics", nil)
	require.Equal(env.t, http.StatusOK, resp.Data[logical.HTTPStatusCode])
	require.True(env.t, strings.HasPrefix(resp.Data[logical.HTTPContentType].(string), "text/plain; version=0.0.4"),
		"content type %v", resp.Data[logical.HTTPContentType])
	body := resp.Data[logical.HTTPRawBody].([]byte)
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(env.t, err, "%s", body)
	return families, string(body)
}

// metricValue is the value of the series of family with exactly these
// labels, and whether there is one.
func metricValue(families map[string]*dto.MetricFamily, family string, labels ...string) (float64, bool) {
	mf := families[family]
	if mf == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range mf.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		match := true
		for _, l := range m.Label {
			if want[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func requireMetric(t *testing.T, families map[string]*dto.MetricFamily, want float64, family string, labels ...string) {
	t.Helper()
	got, ok := metricValue(families, family, labels...)
	require.True(t, ok, "no series %s%v", family, labels)
	require.Equal(t, want, got, "%s%v", family, labels)
}

func TestMetricsPerCredentialAndGrants(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	token := env.readToken("demo")
	families, body := env.scrapeMetrics()

	sess := env.storedSession("demo")
	cred := []string{"kind", "api_user", "name", "demo"}
	requireMetric(t, families, float64(sess.ExpiresAt.UnixNano())/1e9, "iris_credential_token_expiry_timestamp_seconds", cred...)
	cfg, err := env.b.config(context.Background(), env.storage, "demo")
	require.NoError(t, err)
	requireMetric(t, families, float64(sess.refreshAt(cfg).Unix()), "iris_credential_token_refresh_timestamp_seconds", cred...)
	requireMetric(t, families, float64(env.clock.Now().Unix()), "iris_credential_last_success_timestamp_seconds", cred...)
	_, ok := metricValue(families, "iris_credential_last_failure_timestamp_seconds", cred...)
	require.False(t, ok, "no failure yet")
	requireMetric(t, families, 0, "iris_credential_grants_held", cred...)
	requireMetric(t, families, 0, "iris_credential_refused_last_hour", cred...)
	// The verifying grant of the config write is the only grant so far.
	requireMetric(t, families, 1, "iris_grants_total", "grant_type", "password", "kind", "api_user", "outcome", "success")
	requireMetric(t, families, 1, "iris_credentials", "state", "healthy")
	requireMetric(t, families, 0, "iris_credentials", "state", "held")
	requireMetric(t, families, 1, "iris_build_info", "version", Version)

	for _, s := range []string{demoUser.Password, demoUser.ClientSecret, demoUser.ClientID, demoUser.Username,
		token.Data["access_token"].(string), sess.RefreshToken} {
		require.NotContains(t, body, s, "a scrape shows a secret or an identifier")
	}
	for _, mf := range families {
		require.True(t, strings.HasPrefix(mf.GetName(), "iris_"), mf.GetName())
		require.Regexp(t, `\((per process: reset by a plugin restart or a leader change|from storage)\)\.$|^Always 1`, mf.GetHelp(), mf.GetName())
	}

	// IRIS refuses the password: the credential is held, and says so.
	env.iris.SetPassword(demoUser.Username, "changed")
	_, err = env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	families, _ = env.scrapeMetrics()
	requireMetric(t, families, 1, "iris_credential_grants_held", cred...)
	requireMetric(t, families, float64(env.clock.Now().Add(minCredentialHold).Unix()), "iris_credential_grants_held_until_timestamp_seconds", cred...)
	requireMetric(t, families, float64(env.clock.Now().Unix()), "iris_credential_last_failure_timestamp_seconds", cred...)
	requireMetric(t, families, 1, "iris_credential_refused_last_hour", cred...)
	requireMetric(t, families, 1, "iris_grants_total", "grant_type", "password", "kind", "api_user", "outcome", "refused")
	requireMetric(t, families, 1, "iris_credentials", "state", "held")
	requireMetric(t, families, 0, "iris_credentials", "state", "healthy")

	// A held grant is not sent, so not counted.
	_, err = env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	families, _ = env.scrapeMetrics()
	requireMetric(t, families, 1, "iris_grants_total", "grant_type", "password", "kind", "api_user", "outcome", "refused")

	// An hour on, the refusal has left the window.
	env.clock.Advance(grantWindow + time.Second)
	families, _ = env.scrapeMetrics()
	requireMetric(t, families, 0, "iris_credential_refused_last_hour", cred...)
}

func TestMetricsLeasesAndRefreshTokens(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "revocation_url": env.iris.RevocationURL})
	resp := env.readCreds("demo")
	lease := issued(resp, env.clock.Now())
	env.clock.Advance(time.Minute)
	renewed, err := env.renew(lease, 0)
	require.NoError(t, err)
	require.NoError(t, env.revoke(issued(renewed, env.clock.Now())))

	families, _ := env.scrapeMetrics()
	requireMetric(t, families, 1, "iris_leases_issued_total", "kind", "api_user")
	requireMetric(t, families, 1, "iris_leases_renewed_total", "kind", "api_user")
	requireMetric(t, families, 1, "iris_leases_revoked_total", "where", "local")
	requireMetric(t, families, 1, "iris_leases_revoked_total", "where", "remote")
	requireMetric(t, families, 1, "iris_grants_total", "grant_type", "refresh_token", "kind", "api_user", "outcome", "success")

	// A refresh token IRIS refuses is dropped, and the password grant
	// replaces it.
	sess := env.storedSession("demo")
	require.NotEmpty(t, sess.RefreshToken)
	env.iris.FailNext(1, iristest.Fault{Status: http.StatusBadRequest, ContentType: "application/json", Body: `{"error":"invalid_grant"}`})
	env.clock.Advance(sess.ExpiresAt.Sub(env.clock.Now()) - time.Minute)
	env.readToken("demo")
	families, _ = env.scrapeMetrics()
	requireMetric(t, families, 1, "iris_refresh_tokens_dropped_total", "reason", "refused")
	requireMetric(t, families, 1, "iris_grants_total", "grant_type", "refresh_token", "kind", "api_user", "outcome", "refused")
}

func TestMetricsRateLimitsAndBackground(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.readToken("demo")
	sess := env.storedSession("demo")

	// Past the refresh point, with no pass run: the background is behind.
	env.clock.Advance(sess.ExpiresAt.Sub(env.clock.Now()) - time.Minute)
	families, _ := env.scrapeMetrics()
	requireMetric(t, families, 1, "iris_background_behind_sessions")
	requireMetric(t, families, 0, "iris_background_pass_duration_seconds")

	// Two 429s, retried, then a success: both 429s are seen, one grant
	// succeeds.
	env.iris.FailNext(2, iristest.Fault{Status: http.StatusTooManyRequests})
	env.periodic()
	families, _ = env.scrapeMetrics()
	requireMetric(t, families, 2, "iris_rate_limited_responses_total")
	requireMetric(t, families, 1, "iris_background_pass_duration_seconds")
	requireMetric(t, families, 0, "iris_background_behind_sessions")
	requireMetric(t, families, 0, "iris_background_queued_sessions")
	requireMetric(t, families, 0, "iris_grants_in_flight")
	requireMetric(t, families, 1, "iris_grants_total", "grant_type", "refresh_token", "kind", "api_user", "outcome", "success")
}

func TestMetricsRefusesUnknownParameters(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	resp, err := env.request(logical.ReadOperation, "metrics", map[string]interface{}{"format": "json"})
	require.NoError(t, err)
	require.True(t, resp.IsError())
	require.Contains(t, resp.Error().Error(), "unknown field(s): format")
	// Vault answers an error response with 400.
	code, _ := logical.RespondErrorCommon(&logical.Request{Operation: logical.ReadOperation}, resp, nil)
	require.Equal(t, http.StatusBadRequest, code)
}

func TestGrantOutcome(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, outcomeSuccess},
		{&irisauth.Error{Kind: irisauth.KindRejected, Code: "invalid_grant", Sent: true}, outcomeRefused},
		{&irisauth.Error{Kind: irisauth.KindUnavailable, Status: 429, Sent: true}, outcomeRateLimited},
		{&irisauth.Error{Kind: irisauth.KindUnavailable, Status: 503, Sent: true}, outcomeUnavailable},
		{&irisauth.Error{Kind: irisauth.KindUnreachable}, outcomeUnavailable},
		{&irisauth.Error{Kind: irisauth.KindUnreachable, Sent: true}, outcomeOutcomeUnknown},
		{&irisauth.Error{Kind: irisauth.KindTimeout, Sent: true}, outcomeOutcomeUnknown},
		{&irisauth.Error{Kind: irisauth.KindBadResponse, Status: 200, Sent: true}, outcomeUnavailable},
		{fmt.Errorf("wrapped: %w", &irisauth.Error{Kind: irisauth.KindRejected}), outcomeRefused},
		{errors.New("other"), outcomeUnavailable},
	} {
		require.Equal(t, c.want, grantOutcome(c.err), "%v", c.err)
	}
}

// Each mount has its own registry: one process serves every mount.
func TestMetricsPerMount(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	other, otherStorage, _ := env.newBackend()
	resp, err := env.requestOn(other, otherStorage, logical.ReadOperation, "metrics", nil)
	require.NoError(t, err)
	body := string(resp.Data[logical.HTTPRawBody].([]byte))
	require.NotContains(t, body, `name="demo"`)
	require.NotContains(t, body, `outcome="success"`)
}

func TestMountStatus(t *testing.T) {
	t.Parallel()
	// The idle names are another API user's: a hold is per upstream
	// identity and shows on every name that shares it.
	idleUser := iristest.User{ClientID: "0oa-idle-client", ClientSecret: "idle-client-secret-never-shown", Username: "idle-api-user", Password: "idle-pa55word-never-shown"}
	env := newTestEnv(t, demoUser, idleUser)
	env.writeConfig("demo", demoUser, nil)
	env.readToken("demo")
	for i := range maxNamesPerState + 1 {
		env.writeConfig(fmt.Sprintf("idle-%03d", i), idleUser, map[string]interface{}{"verify": false})
	}
	status := env.mustRequest(logical.ReadOperation, "status", nil).Data
	require.Equal(t, map[string]interface{}{stateHealthy: 1, stateHeld: 0, stateFailing: 0, stateNoSharedToken: 0, stateNeverRead: maxNamesPerState + 1}, status["counts"])
	require.Equal(t, maxNamesPerState+2, status["total"])
	require.Len(t, status[stateNeverRead], maxNamesPerState)
	require.Equal(t, "idle-000", status[stateNeverRead].([]string)[0])
	require.Equal(t, true, status[stateNeverRead+"_truncated"])
	require.Equal(t, []string{}, status[stateHeld])
	require.Equal(t, false, status[stateHeld+"_truncated"])

	// A read that finds no token and fails; then one IRIS refuses.
	env.iris.SetFault(&iristest.Fault{Status: http.StatusServiceUnavailable})
	_, err := env.request(logical.ReadOperation, "token/idle-000", nil)
	require.Error(t, err)
	env.iris.SetFault(nil)
	env.iris.SetPassword(demoUser.Username, "changed")
	_, err = env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	status = env.mustRequest(logical.ReadOperation, "status", nil).Data
	require.Equal(t, []string{"demo"}, status[stateHeld])
	require.Equal(t, []string{"idle-000"}, status[stateFailing])
	require.Equal(t, 0, status["counts"].(map[string]interface{})[stateHealthy])

	// Read, and its shared token gone since: wanted, but not held.
	env.readToken("idle-001")
	require.NoError(t, env.b.deleteSession(context.Background(), env.storage, "idle-001"))
	status = env.mustRequest(logical.ReadOperation, "status", nil).Data
	require.Equal(t, []string{"idle-001"}, status[stateNoSharedToken])

	resp, err := env.request(logical.ReadOperation, "status", map[string]interface{}{"nme": "x"})
	require.NoError(t, err)
	require.True(t, resp.IsError())

	list := env.mustRequest(logical.ListOperation, "status/", nil)
	require.Len(t, list.Data["keys"], maxNamesPerState+2)
}

// BenchmarkScrape is one metrics/ read at ten thousand credentials, each
// with a shared token; the scale run measures the same through Vault.
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			backend := newBackend(backendOptions{client: newIRISClient(hclog.NewNullLogger())})
			conf := logical.TestBackendConfig()
			conf.Logger = hclog.NewNullLogger()
			storage := &logical.InmemStorage{}
			conf.StorageView = storage
			if err := backend.Setup(context.Background(), conf); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			now := time.Now()
			for i := range n {
				name := fmt.Sprintf("user-%05d", i)
				cfg := &credential{ClientID: "c", ClientSecret: "s", Username: "u", Password: "p", TokenURL: "https://iris.invalid/token", Generation: "g"}
				if err := backend.putConfig(ctx, storage, name, cfg); err != nil {
					b.Fatal(err)
				}
				sess := &tokenSession{ShapeVersion: sessionShapeVersion, AccessToken: "t", ObtainedAt: now, ExpiresAt: now.Add(time.Hour), Generation: "g"}
				if err := backend.putSession(ctx, storage, name, sess); err != nil {
					b.Fatal(err)
				}
				t, err := backend.grants.admit(ctx, name, cfg, irisauth.GrantPassword)
				if err != nil {
					b.Fatal(err)
				}
				backend.grants.record(t, name, cfg, irisauth.GrantPassword, nil)
				backend.refresher.markRead(name)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var size int
			for b.Loop() {
				body, _, err := backend.scrape(ctx, storage)
				if err != nil {
					b.Fatal(err)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size), "body-bytes")
		})
	}
}

func TestMetricsPerCredentialSetting(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	require.Equal(t, true, env.mustRequest(logical.ReadOperation, "settings", nil).Data[keyMetricsPerCredential])

	env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{keyMetricsPerCredential: false})
	require.Equal(t, false, env.mustRequest(logical.ReadOperation, "settings", nil).Data[keyMetricsPerCredential])
	require.Equal(t, defaultMaxBackgroundGrants, env.mustRequest(logical.ReadOperation, "settings", nil).Data[keyMaxBackgroundGrants])
	families, body := env.scrapeMetrics()
	require.NotContains(t, body, "iris_credential_")
	requireMetric(t, families, 1, "iris_credentials", "state", "healthy")

	// Settings stored before the field existed keep per-credential series.
	// Only the plugin writes its storage, or replication, which invalidates
	// the key; the test writes behind its back, so it invalidates too.
	require.NoError(t, env.storage.Put(context.Background(), &logical.StorageEntry{Key: settingsStorageKey, Value: []byte(`{"max_background_grants":4}`)}))
	env.b.invalidate(context.Background(), settingsStorageKey)
	data := env.mustRequest(logical.ReadOperation, "settings", nil).Data
	require.Equal(t, true, data[keyMetricsPerCredential])
	require.Equal(t, 4, data[keyMaxBackgroundGrants])
	_, body = env.scrapeMetrics()
	require.Contains(t, body, `iris_credential_token_expiry_timestamp_seconds{kind="api_user",name="demo"}`)
}

//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A real Prometheus server scrapes the test Vault's iris/metrics every
// second with the README's scrape config and a token with the README's
// monitoring policy, through a proxy that records every scrape for the leak
// check.

// Placeholders of the README's scrape config, each replaced once.
const (
	scrapeTargetPlaceholder = "vault.example.com:8200"
	scrapeTokenPlaceholder  = "<token with the iris-monitoring policy>"
	scrapeSchemePlaceholder = "scheme: https"
)

// scrapeProxy forwards Prometheus's scrapes to Vault and records each.
type scrapeProxy struct {
	*httptest.Server
	mu      sync.Mutex
	scrapes int
	auth    []string
}

func newScrapeProxy(t *testing.T, v *vaultServer, rec *recorder) *scrapeProxy {
	target, err := url.Parse(v.address())
	require.NoError(t, err)
	p := &scrapeProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.scrapes++
		n := p.scrapes
		p.mu.Unlock()
		rec.addOutput(fmt.Sprintf("prometheus scrape %d (HTTP %d)", n, resp.StatusCode), string(body))
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.auth = append(p.auth, r.Header.Get("Authorization"))
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *scrapeProxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scrapes
}

// prometheusServer is a running Prometheus and its HTTP API.
type prometheusServer struct {
	url string
}

func startPrometheus(t *testing.T, rec *recorder, scrapeConfig string) *prometheusServer {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("IRIS_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("prometheus not found: %v (scripts/install-prometheus.sh installs it)", err)
		}
		t.Skip("prometheus not installed; make test installs it")
	}
	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n" + scrapeConfig
	cfgPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
	port := freePort(t, false)
	logPath := filepath.Join(dir, "prometheus.log")
	rec.addLogFile("prometheus log", logPath)
	startProcess(t, "prometheus", logPath, childEnv(), bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
	)
	p := &prometheusServer{url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	eventually(t, 30*time.Second, "prometheus ready", func() (bool, string) {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return p
}

// promSample is one series of a query answer: its labels, and its value or
// (for a range selector) its samples.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
	Values [][]any           `json:"values"`
}

func sampleValue(pair []any) float64 {
	s, _ := pair[1].(string)
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

func sampleTime(pair []any) float64 {
	f, _ := pair[0].(float64)
	return f
}

func (p *prometheusServer) query(t testing.TB, q string) []promSample {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Equal(t, "success", out.Status, "query %s: %s", q, out.Error)
	return out.Data.Result
}

// scalar is the value of a query with one series, and whether there is one.
func (p *prometheusServer) scalar(t testing.TB, q string) (float64, bool) {
	res := p.query(t, q)
	if len(res) != 1 {
		return 0, false
	}
	return sampleValue(res[0].Value), true
}

// scrapeAs reads iris/metrics as Prometheus does, with the token as a
// bearer token and the given query string, and records the answer.
func scrapeAs(t *testing.T, v *vaultServer, rec *recorder, token, query string) (int, string) {
	t.Helper()
	u := v.address() + "/v1/" + mountPath + "/metrics"
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	rec.addOutput("metrics/ read ?"+query, string(b))
	return resp.StatusCode, string(b)
}

func TestPrometheus(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	em := newEmulator(t, rec, time.Hour)
	refusing := newEmulator(t, rec, time.Hour)
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })
	v.writeConfig(t, consumerName, em)
	v.writeConfig(t, otherName, refusing)
	v.writeDocPolicy(t, policyMonitoring)
	token := v.tokenWithPolicies(t, false, policyMonitoring)

	expires := map[string]time.Time{}
	for _, name := range []string{consumerName, otherName} {
		_, tr := v.readToken(t, name)
		require.NoError(t, tr.check())
		at, err := time.Parse(time.RFC3339, tr.Data["expires_at"].(string))
		require.NoError(t, err)
		expires[name] = at
	}

	// Bad input, through Vault: an unknown parameter is a 400, a token
	// without the policy gets Vault's 403 and no metrics.
	status, body := scrapeAs(t, v, rec, token, "format=json")
	assert.Equal(t, http.StatusBadRequest, status, "%s", body)
	assert.Contains(t, body, "unknown field(s): format")
	// status/ without metrics/: the older monitoring policy.
	statusOnly := filepath.Join(v.dir, "status-only.hcl")
	require.NoError(t, os.WriteFile(statusOnly, []byte(`path "`+mountPath+`/status/*" { capabilities = ["read", "list"] }`), 0o600))
	v.mustCLI(t, "policy", "write", "iris-status-only", statusOnly)
	withoutPolicy := v.tokenWithPolicies(t, false, "iris-status-only")
	status, body = scrapeAs(t, v, rec, withoutPolicy, "")
	assert.Equal(t, http.StatusForbidden, status, "%s", body)
	assert.Contains(t, body, "permission denied")
	assert.NotContains(t, body, "iris_")

	// The README's scrape config, its placeholders filled in.
	proxy := newScrapeProxy(t, v, rec)
	scrape := docBlock(t, monitoringPage, "prometheus.yml")
	for placeholder, value := range map[string]string{
		scrapeTargetPlaceholder: strings.TrimPrefix(proxy.URL, "http://"),
		scrapeTokenPlaceholder:  token,
		scrapeSchemePlaceholder: "scheme: http",
	} {
		require.Equal(t, 1, strings.Count(scrape, placeholder), "the README's scrape config must hold %q once", placeholder)
		scrape = strings.Replace(scrape, placeholder, value, 1)
	}
	prom := startPrometheus(t, rec, scrape)

	eventually(t, 30*time.Second, "up is 1", func() (bool, string) {
		up, ok := prom.scalar(t, `up{job="vault-iris"}`)
		return ok && up == 1, fmt.Sprintf("up=%v (%v)", up, ok)
	})
	proxy.mu.Lock()
	for _, auth := range proxy.auth {
		require.Equal(t, "Bearer "+token, auth, "Prometheus sends the token as a bearer token")
	}
	proxy.mu.Unlock()

	for name, at := range expires {
		got, ok := prom.scalar(t, fmt.Sprintf(`iris_credential_token_expiry_timestamp_seconds{name=%q,kind="api_user"}`, name))
		require.True(t, ok, "no expiry series for %s", name)
		assert.InDelta(t, float64(at.Unix()), got, 1, "expiry of %s", name)
	}

	// The emulator refuses the other credential: held within two scrapes.
	refusing.SetPassword(refusing.User.Username, "changed-"+randomHex(4))
	res := v.raw(t, "GET", mountPath+"/creds/"+otherName, nil)
	require.NotEqual(t, http.StatusOK, res.Status)
	refusedAt := float64(time.Now().UnixNano()) / 1e9
	heldQuery := fmt.Sprintf(`iris_credential_grants_held{name=%q}[1m]`, otherName)
	eventually(t, 30*time.Second, "held in Prometheus", func() (bool, string) {
		v, ok := prom.scalar(t, fmt.Sprintf(`iris_credential_grants_held{name=%q}`, otherName))
		return ok && v == 1, fmt.Sprint(v)
	})
	// Counted in Prometheus's own samples: the first sample that says held
	// is at most the second scrape after the refusal.
	series := prom.query(t, heldQuery)
	require.Len(t, series, 1)
	after := 0
	for _, s := range series[0].Values {
		if sampleTime(s) < refusedAt {
			continue
		}
		after++
		if sampleValue(s) == 1 {
			break
		}
	}
	assert.LessOrEqual(t, after, 2, "scrapes after the refusal until held: %v", series[0].Values)
	_, ok := prom.scalar(t, `iris_credentials{state="held"} == 1`)
	assert.True(t, ok, "the mount-wide count shows one held credential")

	// The grant counters agree with the emulators' own counts.
	eventually(t, 30*time.Second, "grant counters agree with the emulators", func() (bool, string) {
		a, b := em.Stats(), refusing.Stats()
		want := map[string]float64{
			`sum(iris_grants_total{outcome="success",grant_type="password"})`:      float64(a.PasswordGrants + b.PasswordGrants),
			`sum(iris_grants_total{outcome="success",grant_type="refresh_token"})`: float64(a.RefreshGrants + b.RefreshGrants),
			`sum(iris_grants_total{outcome="refused"})`:                            float64(a.Rejected + b.Rejected),
			`sum(iris_grants_total)`:                                               float64(a.Requests + b.Requests),
		}
		var diffs []string
		for q, w := range want {
			got, _ := prom.scalar(t, q)
			if got != w {
				diffs = append(diffs, fmt.Sprintf("%s = %v, emulators say %v", q, got, w))
			}
		}
		return len(diffs) == 0, strings.Join(diffs, "; ")
	})
	_, ok = prom.scalar(t, fmt.Sprintf(`iris_build_info{version=%q}`, pluginVersion))
	assert.True(t, ok, "build info carries the version")

	// promtool accepts a scrape.
	status, body = scrapeAs(t, v, rec, token, "")
	require.Equal(t, http.StatusOK, status)
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)

	proxy.mu.Lock()
	t.Logf("%d scrapes sent, %d answered", len(proxy.auth), proxy.scrapes)
	proxy.mu.Unlock()
	require.GreaterOrEqual(t, proxy.count(), 2)
	outputs := rec.outputsContaining("iris_credential_token_expiry_timestamp_seconds")
	require.GreaterOrEqual(t, outputs, proxy.count(), "every scrape is recorded for the leak check")
}

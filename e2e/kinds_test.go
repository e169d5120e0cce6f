//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// kindsEmulator is an emulator that also serves one API key and one app
// installation, each with fresh random secrets registered with the recorder.
type kindsEmulator struct {
	*emulator
	key iristest.APIKey
	app iristest.AppInstallation
}

func newKindsEmulator(t testing.TB, rec *recorder, keyLifetime time.Duration) *kindsEmulator {
	t.Helper()
	em := &kindsEmulator{emulator: newEmulator(t, rec, time.Hour)}
	em.key = iristest.APIKey{ClientID: "0oakey" + randomHex(7), ClientSecret: "ks+/%=" + randomHex(20),
		AllowedScopes: []string{"iris.assets.read", "iris.alerts.read"}}
	em.app = iristest.AppInstallation{ClientID: "0oaapp" + randomHex(7), ClientSecret: "as+&%~" + randomHex(20),
		AccountID: "acct-" + randomHex(4), Scopes: []string{"iris.assets.read"}}
	rec.addSecret("API key secret", em.key.ClientSecret)
	rec.addSecret("app secret", em.app.ClientSecret)
	em.AddAPIKey(em.key)
	em.AddApp(em.app)
	em.SetAPIKeyTokenLifetime(keyLifetime)
	return em
}

// keyArgs and appArgs are the CLI arguments of a config write for the key
// or the app; each key=value of extra replaces or adds a field.
func (em *kindsEmulator) keyArgs(name string, extra ...string) []string {
	return writeArgs(name, []string{"kind=api_key", "client_id=" + em.key.ClientID,
		"client_secret=" + em.key.ClientSecret, "scopes=iris.assets.read", "token_url=" + em.TokenV2URL}, extra)
}

func (em *kindsEmulator) appArgs(name string, extra ...string) []string {
	return writeArgs(name, []string{"kind=app", "client_id=" + em.app.ClientID,
		"client_secret=" + em.app.ClientSecret, "scopes=iris.assets.read", "account_id=" + em.app.AccountID,
		"token_url=" + em.AppTokenURL}, extra)
}

func writeArgs(name string, fields, extra []string) []string {
	for _, kv := range extra {
		key, _, _ := strings.Cut(kv, "=")
		fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, key+"=") })
		fields = append(fields, kv)
	}
	return append([]string{"write", mountPath + "/config/" + name}, fields...)
}

// TestKinds checks the credential kinds through a real Vault: API keys and app
// installations beside API users, written, verified, refused, read through
// creds/ and token/, and rendered by a Vault Agent with short tokens; the
// leak check covers every kind's secrets once the server has stopped.
func TestKinds(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	t.Run("VerifiedWritesAndReads", func(t *testing.T) {
		em := newKindsEmulator(t, v.rec, 20*time.Minute)
		cases := []struct {
			name, endpoint string
			args           []string
			lifetime       int64
		}{
			{"key", "/token/v2", em.keyArgs("key"), 1200},
			{"app", "/apptoken", em.appArgs("app"), 3600},
		}
		for _, tc := range cases {
			before := len(em.Requests())
			v.mustCLI(t, tc.args...)
			reqs := em.Requests()[before:]
			require.Len(t, reqs, 1, "the write verified with one grant")
			assert.Equal(t, tc.endpoint, reqs[0].Endpoint)
			assert.Equal(t, "client_credentials", reqs[0].GrantType)
			assert.Equal(t, http.StatusOK, reqs[0].Status)

			cfg := v.readConfigRaw(t, tc.name)
			assert.NotContains(t, cfg, "username")
			assert.NotContains(t, cfg, "client_secret")

			lt := v.readCreds(t, tc.name)
			assert.False(t, lt.Renewable)
			assert.Equal(t, "iris.assets.read", lt.Data.Scope)
			active, _ := em.Introspect(lt.Data.AccessToken)
			assert.True(t, active, "creds/ of %s", tc.name)
			assert.InDelta(t, tc.lifetime, lt.Data.ExpiresIn, 5, "documented lifetime")

			res, tr := v.readToken(t, tc.name)
			require.Equal(t, http.StatusOK, res.Status, res.Raw)
			require.NoError(t, tr.check())
			assert.Equal(t, tc.lifetime*2/3, tr.int("rotation_period"), "replaced at a third of its life")
			active, _ = em.Introspect(tr.accessToken())
			assert.True(t, active, "token/ of %s", tc.name)
		}
		app := v.readConfigRaw(t, "app")
		assert.Equal(t, "app", app["kind"])
		assert.Equal(t, em.app.AccountID, app["account_id"])
		for _, r := range em.Requests() {
			assert.NotEqual(t, "refresh_token", r.GrantType)
		}
		assert.Zero(t, em.Stats().Rejected, "the documented request: credentials in the body, no Basic header")
		for _, is := range em.Issued() {
			assert.Empty(t, is.RefreshToken)
		}
	})

	t.Run("RefusedWrites", func(t *testing.T) {
		em := newKindsEmulator(t, v.rec, 20*time.Minute)
		cases := []struct {
			label string
			args  []string
			want  []string
		}{
			{"wrong secret", em.keyArgs("refused", "client_secret=wrong-secret"), []string{"invalid_client", "wrong client ID or client secret"}},
			{"disallowed scope", em.keyArgs("refused", "scopes=iris.assets.read,iris.admin"),
				[]string{"invalid_scope", "(iris.assets.read iris.admin)", "Trackunit's API Keys app"}},
			{"username", em.keyArgs("refused", "username=someone"), []string{"username does not apply to kind api_key"}},
			{"password", em.keyArgs("refused", "password=secret"), []string{"password does not apply to kind api_key"}},
			{"renewable leases", em.keyArgs("refused", "renewable_leases=true"), []string{"renewable_leases does not apply to kind api_key"}},
			{"account on a key", em.keyArgs("refused", "account_id=acct"), []string{"account_id does not apply to kind api_key"}},
			{"no scopes", em.keyArgs("refused", "scopes="), []string{"scopes must name the scopes to request"}},
		}
		for _, tc := range cases {
			res := v.cliFails(t, tc.args...)
			assert.Contains(t, res.Stderr, "Code: 400", "%s: %s", tc.label, res)
			for _, want := range tc.want {
				assert.Contains(t, res.Stderr, want, "%s", tc.label)
			}
			assert.NotContains(t, v.listConfigs(t), "refused", "%s stored nothing", tc.label)
		}

		v.mustCLI(t, em.keyArgs("fixed")...)
		res := v.cliFails(t, "write", mountPath+"/config/fixed", "kind=app")
		assert.Contains(t, res.Stderr, "Code: 400", "%s", res)
		assert.Contains(t, res.Stderr, "delete it and create it again", "%s", res)
		assert.Equal(t, "api_key", v.readConfigRaw(t, "fixed")["kind"])
	})

	t.Run("AgentOnAPIKeyToken", func(t *testing.T) {
		t.Parallel()
		testAgentOnAPIKeyToken(t, v)
	})
}

// testAgentOnAPIKeyToken renders an API key's token/ with a real Vault Agent
// on 30-second tokens: at every sample over more than three lifetimes, the
// file holds a token IRIS accepts, obtained by a client-credentials grant.
func testAgentOnAPIKeyToken(t *testing.T, v *vaultServer) {
	const (
		lifetime = 30 * time.Second
		window   = 100 * time.Second
	)
	em := newKindsEmulator(t, v.rec, lifetime)
	v.mustCLI(t, em.keyArgs("agent-key")...)

	var path string
	a := startAgentWith(t, v, func(dir string) string {
		path = filepath.Join(dir, "iris-key-token")
		return fmt.Sprintf(`
template {
  contents    = "{{ with secret \"%s/token/agent-key\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
}
`, mountPath, path)
	})
	a.waitFile(t, path, startTimeout, "Agent to render the API key's token/", func(s string) bool {
		return strings.TrimSpace(s) != ""
	})

	deadline := time.Now().Add(window)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	distinct, samples := map[string]bool{}, 0
	for now := time.Now(); now.Before(deadline); now = <-tick.C {
		a.checkRunning(t)
		samples++
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		tok := strings.TrimSpace(string(b))
		if !distinct[tok] {
			distinct[tok] = true
			v.rec.addOutput("rendered API key token", string(b))
		}
		active, expiresAt := em.Introspect(tok)
		if !active || time.Until(expiresAt) <= 0 {
			t.Errorf("sample %d: the rendered file holds a token IRIS does not accept", samples)
		}
		is, ok := em.IssuanceOf(tok)
		if assert.True(t, ok, "sample %d: a token the emulator never issued", samples) {
			assert.Equal(t, "client_credentials", is.GrantType)
		}
	}
	t.Logf("%d samples, %d distinct tokens over %s", samples, len(distinct), window)
	assert.GreaterOrEqual(t, len(distinct), 3, "the Agent followed the token's rotation")
	assert.Zero(t, em.Stats().Rejected)
}

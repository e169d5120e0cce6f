package iris

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

func TestConfigLifecycle(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	data := demoConfigData(env)
	data["ttl"] = "15m"
	data["revocation_url"] = env.iris.RevocationURL
	env.mustRequest(logical.CreateOperation, "config/demo", data)
	require.Equal(t, 1, env.iris.Stats().PasswordGrants, "a write verifies with one password grant")
	sess, err := env.b.sessionFromStorage(context.Background(), env.storage, "demo")
	require.NoError(t, err)
	require.NotNil(t, sess, "the verifying grant's token seeds the token/ session")

	resp := env.mustRequest(logical.ReadOperation, "config/demo", nil)
	require.Equal(t, map[string]interface{}{
		"kind":             "api_user",
		"client_id":        demoUser.ClientID,
		"username":         demoUser.Username,
		"scopes":           []string{"api", "offline_access"},
		"token_url":        env.iris.TokenURL,
		"revocation_url":   env.iris.RevocationURL,
		"ttl":              int64(900),
		"max_ttl":          int64(0),
		"request_timeout":  int64(10),
		"renewable_leases": false,
		"refresh_floor":    int64(0),
	}, resp.Data)

	// An update changes only what it names.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"scopes": "api", "max_ttl": 3600})
	resp = env.mustRequest(logical.ReadOperation, "config/demo", nil)
	require.Equal(t, []string{"api"}, resp.Data["scopes"])
	require.Equal(t, int64(3600), resp.Data["max_ttl"])
	require.Equal(t, int64(900), resp.Data["ttl"])
	require.Equal(t, demoUser.Username, resp.Data["username"])

	env.writeConfig("second", demoUser, nil)
	resp = env.mustRequest(logical.ListOperation, "config/", nil)
	require.Equal(t, []string{"demo", "second"}, resp.Data["keys"])

	env.mustRequest(logical.DeleteOperation, "config/demo", nil)
	resp = env.mustRequest(logical.ReadOperation, "config/demo", nil)
	require.Nil(t, resp)
	resp = env.mustRequest(logical.ListOperation, "config/", nil)
	require.Equal(t, []string{"second"}, resp.Data["keys"])

	env.assertNoSecrets(demoUser)
}

func TestConfigReadNeverRevealsSecrets(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	resp := env.mustRequest(logical.ReadOperation, "config/demo", nil)
	whole, err := json.Marshal(resp)
	require.NoError(t, err)
	require.NotContains(t, string(whole), demoUser.ClientSecret)
	require.NotContains(t, string(whole), demoUser.Password)
	require.NotContains(t, resp.Data, "client_secret")
	require.NotContains(t, resp.Data, "password")
}

func TestConfigExistenceCheckSplitsCreateAndUpdate(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()
	check := func() bool {
		t.Helper()
		checkFound, exists, err := env.b.HandleExistenceCheck(ctx, &logical.Request{
			Operation: logical.CreateOperation, Path: "config/demo", Storage: env.storage,
		})
		require.NoError(t, err)
		require.True(t, checkFound)
		return exists
	}
	require.False(t, check(), "a new name is a create: a policy with only update cannot create")

	// Create needs all four secrets.
	resp, err := env.request(logical.CreateOperation, "config/demo", map[string]interface{}{"client_id": "x", "token_url": env.iris.TokenURL})
	require.NoError(t, err)
	require.True(t, resp.IsError())
	for _, key := range []string{"client_secret is required", "username is required", "password is required"} {
		require.Contains(t, resp.Error().Error(), key)
	}
	require.False(t, check())

	env.writeConfig("demo", demoUser, nil)
	require.True(t, check())

	// Update never needs the secrets again, and cannot blank them.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": 60})
	resp, err = env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": ""})
	require.NoError(t, err)
	require.True(t, resp.IsError())
	require.Contains(t, resp.Error().Error(), "password must not be empty")
}

func TestConfigRejectsBadInput(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	cases := []struct {
		name    string
		path    string
		change  map[string]interface{}
		wantErr string
	}{
		{"bad name characters", "config/bad%20name!", nil, "invalid name"},
		{"name with slash", "config/a/b", nil, "invalid name"},
		{"name ending in dash", "config/demo-", nil, "invalid name"},
		{"name too long", "config/" + strings.Repeat("a", 129), nil, "invalid name"},
		{"unknown field", "config/demo", map[string]interface{}{"client-secret": "x"}, "unknown field(s): client-secret"},
		{"ttl not a duration", "config/demo", map[string]interface{}{"ttl": "soon"}, "ttl"},
		{"negative ttl", "config/demo", map[string]interface{}{"ttl": -5}, "cannot provide negative value"},
		{"ttl above max_ttl", "config/demo", map[string]interface{}{"ttl": 600, "max_ttl": 60}, "ttl must not exceed max_ttl"},
		{"renewable not a bool", "config/demo", map[string]interface{}{"renewable_leases": "sometimes"}, "renewable_leases"},
		{"request timeout too long", "config/demo", map[string]interface{}{"request_timeout": "5m"}, "request_timeout must be between"},
		{"request timeout zero", "config/demo", map[string]interface{}{"request_timeout": 0}, "request_timeout must be between"},
		{"empty scopes", "config/demo", map[string]interface{}{"scopes": ""}, "at least one scope"},
		{"scope with quote", "config/demo", map[string]interface{}{"scopes": `api"`}, "does not allow"},
		{"http token url on a remote host", "config/demo", map[string]interface{}{"token_url": "http://auth.trackunit.com/token"}, "must use https://"},
		{"http token url on a private address", "config/demo", map[string]interface{}{"token_url": "http://10.0.0.1/token"}, "must use https://"},
		{"ftp token url", "config/demo", map[string]interface{}{"token_url": "ftp://127.0.0.1/token"}, "must use https://"},
		{"relative token url", "config/demo", map[string]interface{}{"token_url": "/token"}, "not an absolute URL"},
		{"token url with credentials", "config/demo", map[string]interface{}{"token_url": "https://user:pw@auth.trackunit.com/token"}, "must not contain credentials"},
		{"token url with query", "config/demo", map[string]interface{}{"token_url": "https://auth.trackunit.com/token?x=1"}, "query or fragment"},
		{"http revocation url on a remote host", "config/demo", map[string]interface{}{"revocation_url": "http://example.com/revoke"}, "revocation_url must use https://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := demoConfigData(env)
			for k, v := range tc.change {
				data[k] = v
			}
			resp, err := env.request(logical.CreateOperation, tc.path, data)
			if err == nil {
				require.NotNil(t, resp)
				require.True(t, resp.IsError(), "expected an error response")
				err = resp.Error()
			}
			require.ErrorContains(t, err, tc.wantErr)
			status, _ := logical.RespondErrorCommon(&logical.Request{}, resp, err)
			require.Equal(t, http.StatusBadRequest, status)
			// The secrets are never echoed back, even in errors.
			require.NotContains(t, err.Error(), demoUser.ClientSecret)
			require.NotContains(t, err.Error(), demoUser.Password)
		})
	}
	require.Zero(t, env.iris.Stats().Requests, "no invalid config reaches IRIS")
	resp := env.mustRequest(logical.ListOperation, "config/", nil)
	require.Empty(t, resp.Data["keys"])
}

func TestConfigMalformedSecretIsNeverEchoed(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	for _, key := range []string{"client_secret", "password"} {
		for _, value := range []interface{}{
			[]interface{}{demoUser.Password, demoUser.ClientSecret}, // `vault write … password=A password=B`
			map[string]interface{}{"x": demoUser.Password},
		} {
			data := demoConfigData(env)
			data[key] = value
			req := &logical.Request{Operation: logical.CreateOperation, Path: "config/demo", Data: data, Storage: env.storage}
			_, exists, err := env.b.HandleExistenceCheck(context.Background(), req)
			require.NoError(t, err)
			require.False(t, exists)
			resp, err := env.b.HandleRequest(context.Background(), req)
			env.recordForLeakCheck(resp, err)
			require.NoError(t, err)
			require.True(t, resp.IsError())
			require.Equal(t, key+" must be a single string", resp.Error().Error())
		}
	}
	env.assertNoSecrets(demoUser)
	require.Zero(t, env.iris.Stats().Requests)
}

func TestConfigURLRulesHoldOnUpdate(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	for _, field := range []string{"token_url", "revocation_url"} {
		resp, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{field: "http://iris.example.com/x"})
		require.NoError(t, err)
		require.True(t, resp.IsError(), field)
		require.Contains(t, resp.Error().Error(), field+" must use https://")
	}
	// Loopback in every spelling is allowed for local emulators, once
	// allowed_hosts names it.
	env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{"allowed_hosts": testAllowedHosts + ",localhost,127.0.0.2,::1"})
	for _, u := range []string{"http://localhost:1/token", "http://127.0.0.2:1/token", "http://[::1]:1/token"} {
		data := map[string]interface{}{"revocation_url": u, "client_secret": demoUser.ClientSecret, "password": demoUser.Password}
		env.mustRequest(logical.UpdateOperation, "config/demo", data)
	}
}

func TestConfigVerification(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		change     map[string]interface{}
		wantCode   string
		wantHint   string
		wantStatus int
	}{
		{"wrong password", map[string]interface{}{"password": "wrong-password-never-shown"}, "invalid_grant", "wrong username or password", http.StatusBadRequest},
		{"wrong username", map[string]interface{}{"username": "nobody"}, "invalid_grant", "wrong username or password", http.StatusBadRequest},
		{"wrong client secret", map[string]interface{}{"client_secret": "wrong-secret-never-shown"}, "invalid_client", "wrong client ID or client secret", http.StatusBadRequest},
		{"unknown scope", map[string]interface{}{"scopes": "api,admin"}, "invalid_scope", "scopes", http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			data := demoConfigData(env)
			for k, v := range tc.change {
				data[k] = v
			}
			resp, err := env.request(logical.CreateOperation, "config/demo", data)
			status, err := logical.RespondErrorCommon(&logical.Request{}, resp, err)
			require.Error(t, err)
			require.Equal(t, tc.wantStatus, status)
			require.Contains(t, err.Error(), tc.wantCode)
			require.Contains(t, err.Error(), tc.wantHint)
			require.Contains(t, err.Error(), `API user "demo"`)

			resp = env.mustRequest(logical.ListOperation, "config/", nil)
			require.Empty(t, resp.Data["keys"], "nothing is stored when IRIS refuses")
			env.assertNoSecrets(demoUser)
		})
	}
}

func TestConfigVerifyFalseSkipsIRIS(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	data := demoConfigData(env)
	data["password"] = "not-checked"
	data["verify"] = false
	env.mustRequest(logical.CreateOperation, "config/demo", data)
	require.Zero(t, env.iris.Stats().Requests)
	resp := env.mustRequest(logical.ReadOperation, "config/demo", nil)
	require.Equal(t, demoUser.Username, resp.Data["username"])
}

func TestConfigVerificationWhenIRISIsDown(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.iris.SetFault(&iristest.Fault{Status: http.StatusServiceUnavailable})
	_, err := env.request(logical.CreateOperation, "config/demo", demoConfigData(env))
	var coded logical.HTTPCodedError
	require.ErrorAs(t, err, &coded)
	require.Equal(t, http.StatusServiceUnavailable, coded.Code())
	require.Contains(t, err.Error(), "verify=false")
}

func TestConfigPathsDeclareOpenAPIAndForwarding(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	for _, p := range env.b.Paths {
		require.NotNil(t, p.DisplayAttrs, p.Pattern)
		require.Equal(t, operationPrefix, p.DisplayAttrs.OperationPrefix, p.Pattern)
		require.NotEmpty(t, p.HelpSynopsis, p.Pattern)
		require.NotEmpty(t, p.HelpDescription, p.Pattern)
		for name, field := range p.Fields {
			assert.NotEmpty(t, field.Description, "%s field %s", p.Pattern, name)
		}
		for op, handler := range p.Operations {
			props := handler.Properties()
			if strings.HasPrefix(p.Pattern, "config/") && op != logical.ReadOperation && op != logical.ListOperation {
				assert.True(t, props.ForwardPerformanceStandby, "%s %s", p.Pattern, op)
				assert.True(t, props.ForwardPerformanceSecondary, "%s %s", p.Pattern, op)
			}
			if strings.HasPrefix(p.Pattern, "creds/") {
				assert.True(t, props.ForwardPerformanceStandby, "%s %s", p.Pattern, op)
			}
		}
	}
}

// afterRoundTrip runs fn once, after the next HTTP exchange with IRIS.
type afterRoundTrip struct {
	next http.RoundTripper
	fn   func()
	once sync.Once
}

func (a *afterRoundTrip) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(r)
	a.once.Do(a.fn)
	return resp, err
}

func TestConfigWriteRacingDeleteNeverResurrects(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	transport := env.b.client.HTTP.Transport
	env.b.client.HTTP = &http.Client{Transport: &afterRoundTrip{next: transport, fn: func() {
		// A delete lands while the update's verifying grant is at IRIS.
		env.mustRequest(logical.DeleteOperation, "config/demo", nil)
	}}}
	_, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "5m"})
	require.ErrorContains(t, err, "changed or deleted while this write ran")
	cfg, err := env.b.configFromStorage(context.Background(), env.storage, "demo")
	require.NoError(t, err)
	require.Nil(t, cfg, "delete always wins")
}

// A principal allowed only to update a config cannot point it at its own
// host to collect secrets it was never shown: a write that moves token_url
// or revocation_url must carry the secrets itself.
func TestConfigEndpointChangeNeedsTheSecrets(t *testing.T) {
	t.Parallel()
	var seen atomic.Int32
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(attacker.Close)

	for _, field := range []string{"token_url", "revocation_url"} {
		for _, verify := range []bool{true, false} {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, nil)
			before := env.mustRequest(logical.ReadOperation, "config/demo", nil).Data

			resp, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{field: attacker.URL + "/token", "verify": verify})
			require.NoError(t, err)
			require.True(t, resp.IsError(), "%s verify=%v", field, verify)
			require.Contains(t, resp.Error().Error(), "client_secret and password missing")
			require.Equal(t, before, env.mustRequest(logical.ReadOperation, "config/demo", nil).Data, "nothing changed")

			resp, err = env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{field: attacker.URL + "/token", "password": demoUser.Password, "verify": verify})
			require.NoError(t, err)
			require.Contains(t, resp.Error().Error(), "client_secret missing")

			// Reads and revocations afterwards still go where they went.
			lease := issued(env.readCreds("demo"), time.Now())
			require.NoError(t, env.revoke(lease))
			env.clock.Advance(3000 * time.Second)
			env.readToken("demo")
		}
	}
	require.Zero(t, seen.Load(), "no request reached the new host")

	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{
		"revocation_url": env.iris.RevocationURL, "client_secret": demoUser.ClientSecret, "password": demoUser.Password,
	})
}

func TestConfigStoresSecretsByteForByte(t *testing.T) {
	t.Parallel()
	spaced := iristest.User{ClientID: "0oa-spaced", ClientSecret: " secret with spaces ", Username: "spaced-user", Password: "\tpassword\n"}
	env := newTestEnv(t, spaced)
	env.writeConfig("demo", spaced, nil)
	env.readCreds("demo")

	for _, key := range []string{"client_secret", "password"} {
		resp, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{key: ""})
		require.NoError(t, err)
		require.True(t, resp.IsError())
		require.Contains(t, resp.Error().Error(), key+" must not be empty")
	}
}

func TestErrorHintsNameTheRealMount(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/nobody", Storage: env.storage, MountPoint: "fleet/iris-eu/"}
	_, err := env.b.HandleRequest(context.Background(), req)
	require.ErrorContains(t, err, "write it to fleet/iris-eu/config/nobody first")

	env.writeConfig("demo", demoUser, nil)
	env.iris.SetPassword(demoUser.Username, "changed")
	req = &logical.Request{Operation: logical.ReadOperation, Path: "creds/demo", Storage: env.storage, MountPoint: "fleet/iris-eu/"}
	_, err = env.b.HandleRequest(context.Background(), req)
	require.ErrorContains(t, err, "update them at fleet/iris-eu/config/demo")
}

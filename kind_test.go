package iris

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// The key's and the app's secrets are distinctive, so that the leak checks
// can search for them; the key's secret has characters form encoding
// changes.
var (
	demoKey = iristest.APIKey{ClientID: "0oa-key-client", ClientSecret: "key+secret%2Fof the key", AllowedScopes: []string{"iris.assets.read", "iris.alerts.read"}}
	demoApp = iristest.AppInstallation{ClientID: "0oa-app-client", ClientSecret: "app-secret-Rt5&Wq", AccountID: "acct-4711", Scopes: []string{"iris.assets.read"}}
)

func newKindsEnv(t *testing.T) *testEnv {
	env := newTestEnv(t)
	env.iris.AddAPIKey(demoKey)
	env.iris.AddApp(demoApp)
	return env
}

func (env *testEnv) writeKey(name string, extra map[string]interface{}) {
	env.t.Helper()
	data := map[string]interface{}{"kind": "api_key", "client_id": demoKey.ClientID, "client_secret": demoKey.ClientSecret,
		"scopes": "iris.assets.read", "token_url": env.iris.TokenV2URL}
	for k, v := range extra {
		data[k] = v
	}
	env.mustRequest(logical.CreateOperation, "config/"+name, data)
}

func (env *testEnv) writeApp(name string) {
	env.t.Helper()
	env.mustRequest(logical.CreateOperation, "config/"+name, map[string]interface{}{"kind": "app", "client_id": demoApp.ClientID,
		"client_secret": demoApp.ClientSecret, "scopes": "iris.assets.read", "account_id": demoApp.AccountID, "token_url": env.iris.AppTokenURL})
}

func TestEveryKindServesCredsAndToken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		kind, endpoint string
		write          func(env *testEnv)
		lifetime       int64
		secrets        []string
	}{
		{"api_key", "/token/v2", func(env *testEnv) { env.writeKey("x", nil) }, 1200, []string{demoKey.ClientSecret}},
		{"app", "/apptoken", func(env *testEnv) { env.writeApp("x") }, 3600, []string{demoApp.ClientSecret}},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			env := newKindsEnv(t)
			tc.write(env)
			reqs := env.iris.Requests()
			require.Len(t, reqs, 1, "the write verified with one grant")
			require.Equal(t, tc.endpoint, reqs[0].Endpoint)
			require.Equal(t, "client_credentials", reqs[0].GrantType)
			require.Equal(t, "iris.assets.read", reqs[0].Scope)
			require.Zero(t, env.iris.Stats().Rejected, "the documented request: credentials in the body, no Basic header")

			creds := env.readCreds("x")
			require.Equal(t, tc.lifetime, creds.Data["expires_in"])
			require.False(t, creds.Secret.Renewable)
			require.Empty(t, creds.Secret.InternalData["refresh_token"])

			token := env.readToken("x")
			require.Equal(t, tc.lifetime*2/3, token.Data["rotation_period"], "replaced at a third of its life")
			require.False(t, env.mustRequest(logical.ReadOperation, "status/x", nil).Data["refresh_token_held"].(bool))
			require.Equal(t, tc.kind, env.mustRequest(logical.ReadOperation, "status/x", nil).Data["kind"])

			// Past the refresh point the only way to a new token is another
			// client-credentials grant.
			env.clock.Advance(time.Duration(tc.lifetime*2/3+1) * time.Second)
			env.iris.ResetStats()
			fresh := env.readToken("x")
			require.NotEqual(t, token.Data["access_token"], fresh.Data["access_token"])
			require.Equal(t, 1, env.iris.Stats().Requests)
			require.Equal(t, "client_credentials", env.iris.Requests()[0].GrantType)

			logs, shown := env.logs.String(), env.shown.String()
			for _, secret := range tc.secrets {
				require.NotContains(t, logs, secret)
				require.NotContains(t, shown, secret)
			}
		})
	}
}

func TestKindsReadBackWithoutSecrets(t *testing.T) {
	t.Parallel()
	env := newKindsEnv(t)
	env.writeApp("acme")
	data := env.mustRequest(logical.ReadOperation, "config/acme", nil).Data
	require.Equal(t, "app", data["kind"])
	require.Equal(t, demoApp.AccountID, data["account_id"])
	require.NotContains(t, data, "username")
	whole, err := json.Marshal(data)
	require.NoError(t, err)
	require.NotContains(t, string(whole), demoApp.ClientSecret)

	// Each kind's default endpoint.
	for kind, want := range map[string]string{"api_user": "https://auth.trackunit.com/token", "api_key": "https://auth.trackunit.com/token/v2", "app": "https://auth.trackunit.com/apptoken"} {
		write := map[string]interface{}{"kind": kind, "client_id": "c", "client_secret": "s", "scopes": "api", "verify": false}
		if kind == "api_user" {
			write["username"], write["password"] = "u", "p"
		}
		env.mustRequest(logical.CreateOperation, "config/default-"+kind, write)
		require.Equal(t, want, env.mustRequest(logical.ReadOperation, "config/default-"+kind, nil).Data["token_url"])
	}
}

func TestKindsRefuseWhatDoesNotApply(t *testing.T) {
	t.Parallel()
	env := newKindsEnv(t)
	base := func(extra map[string]interface{}) map[string]interface{} {
		data := map[string]interface{}{"kind": "api_key", "client_id": demoKey.ClientID, "client_secret": demoKey.ClientSecret,
			"scopes": "iris.assets.read", "token_url": env.iris.TokenV2URL}
		for k, v := range extra {
			data[k] = v
		}
		return data
	}
	cases := []struct {
		name string
		data map[string]interface{}
		want string
	}{
		{"username on a key", base(map[string]interface{}{"username": "u"}), "username does not apply to kind api_key"},
		{"password on a key", base(map[string]interface{}{"password": "pw-for-a-key-never-shown"}), "password does not apply to kind api_key"},
		{"renewable leases on a key", base(map[string]interface{}{"renewable_leases": true}), "renewable_leases does not apply to kind api_key"},
		{"account_id on a key", base(map[string]interface{}{"account_id": "a"}), "account_id does not apply to kind api_key"},
		{"no scopes on a key", base(map[string]interface{}{"scopes": ""}), "scopes must name the scopes to request"},
		{"unknown kind", base(map[string]interface{}{"kind": "robot"}), "kind must be one of api_key, api_user, app"},
		{"wrong secret", base(map[string]interface{}{"client_secret": "wrong-key-secret-never-shown"}), "wrong client ID or client secret"},
		{"disallowed scope", base(map[string]interface{}{"scopes": "iris.assets.read,iris.admin"}),
			"IRIS refused the scopes asked for (iris.assets.read iris.admin): an API key may request only the scopes allowed in Trackunit's API Keys app"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := env.request(logical.CreateOperation, "config/key", tc.data)
			require.NoError(t, err)
			require.True(t, resp.IsError())
			require.Contains(t, resp.Error().Error(), tc.want)
			require.Nil(t, env.mustRequest(logical.ReadOperation, "config/key", nil), "nothing stored")
		})
	}

	env.writeKey("key", nil)
	resp, err := env.request(logical.UpdateOperation, "config/key", map[string]interface{}{"kind": "api_user"})
	require.NoError(t, err)
	require.Contains(t, resp.Error().Error(), "delete it and create it again")
	resp, err = env.request(logical.UpdateOperation, "config/key", map[string]interface{}{"renewable_leases": false, "kind": "api_key"})
	require.NoError(t, err)
	require.Nil(t, resp, "naming what a key already is refuses nothing")
	env.assertNoSecrets(iristest.User{Password: "unused-password", ClientSecret: demoKey.ClientSecret})
}

// A key whose secret was revoked in Trackunit is held back like an API user
// whose password changed.
func TestKeyRefusedIsHeld(t *testing.T) {
	t.Parallel()
	env := newKindsEnv(t)
	env.writeKey("key", nil)
	env.iris.SetClientSecret(demoKey.ClientID, "rotated")
	for range 10 {
		_, err := env.request(logical.ReadOperation, "creds/key", nil)
		var coded logical.HTTPCodedError
		require.ErrorAs(t, err, &coded)
		require.Equal(t, http.StatusBadGateway, coded.Code())
		env.clock.Advance(time.Second)
	}
	require.Equal(t, 1, env.iris.Stats().Rejected, "one refused attempt, then the hold")
}

// A refresh token that an API key's or app's grant returns, against the
// protocol, is ignored: never stored, sent, revoked or shown.
func TestClientCredentialsRefreshTokenIsIgnored(t *testing.T) {
	t.Parallel()
	cases := []struct {
		kind  string
		write func(env *testEnv)
	}{
		{"api_key", func(env *testEnv) {
			env.writeKey("x", map[string]interface{}{"revocation_url": env.iris.RevocationURL, "client_secret": demoKey.ClientSecret})
		}},
		{"app", func(env *testEnv) {
			env.writeApp("x")
			env.mustRequest(logical.UpdateOperation, "config/x", map[string]interface{}{"revocation_url": env.iris.RevocationURL, "client_secret": demoApp.ClientSecret})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			env := newKindsEnv(t)
			env.iris.SetClientCredentialsRefreshTokens(true)
			tc.write(env)
			env.readToken("x")
			env.readCreds("x")
			env.clock.Advance(time.Hour) // the shared token is due
			env.readToken("x")
			env.periodic()
			env.mustRequest(logical.DeleteOperation, "config/x", nil)

			issuedRefresh := 0
			for _, is := range env.iris.Issued() {
				if is.RefreshToken != "" {
					issuedRefresh++
				}
			}
			require.Positive(t, issuedRefresh, "the emulator returned refresh tokens")
			require.Nil(t, env.storedSession("x"))
			for _, r := range env.iris.Requests() {
				require.Empty(t, r.RefreshToken, "a refresh token was sent")
				require.Equal(t, "client_credentials", r.GrantType)
			}
			require.Zero(t, env.iris.Stats().Revocations, "nothing to revoke: no refresh token was kept")
			env.assertNoSecrets()
		})
	}
}

// While stored, the session of a client-credentials kind holds no refresh
// token either.
func TestClientCredentialsSessionHoldsNoRefreshToken(t *testing.T) {
	t.Parallel()
	env := newKindsEnv(t)
	env.iris.SetClientCredentialsRefreshTokens(true)
	env.writeKey("x", nil)
	env.readToken("x")
	sess := env.storedSession("x")
	require.NotNil(t, sess)
	require.Empty(t, sess.RefreshToken)
	resp := env.readCreds("x")
	require.Empty(t, internalString(resp.Secret, internalRefreshToken))
}

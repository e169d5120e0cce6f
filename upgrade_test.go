package iris

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/irisauth"
)

// What v0.1.0 stored keeps working after the binary is replaced: its config
// (shape 1, no ID), its shared session, and its leases (no API user ID).
func TestStoredByV010KeepsWorking(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()

	// Real tokens, so that the emulator accepts them; the stored shapes are
	// written exactly as v0.1.0 wrote them.
	issuedTok, err := env.b.verify(ctx, &credential{
		ClientID: demoUser.ClientID, ClientSecret: demoUser.ClientSecret, Username: demoUser.Username, Password: demoUser.Password,
		Scopes: defaultScopes, TokenURL: env.iris.TokenURL, RequestTimeout: 10 * time.Second,
	})
	require.NoError(t, err)
	leaseTok, err := env.b.verify(ctx, &credential{
		ClientID: demoUser.ClientID, ClientSecret: demoUser.ClientSecret, Username: demoUser.Username, Password: demoUser.Password,
		Scopes: defaultScopes, TokenURL: env.iris.TokenURL, RequestTimeout: 10 * time.Second,
	})
	require.NoError(t, err)

	put := func(key, value string) {
		require.NoError(t, env.storage.Put(ctx, &logical.StorageEntry{Key: key, Value: []byte(value)}))
	}
	put("config/demo", `{"shape_version":1,"client_id":"`+demoUser.ClientID+`","client_secret":"`+demoUser.ClientSecret+
		`","username":"`+demoUser.Username+`","password":"`+demoUser.Password+`","scopes":["api","offline_access"],"token_url":"`+
		env.iris.TokenURL+`","ttl":0,"max_ttl":0,"request_timeout":10000000000,"renewable_leases":true,"refresh_floor":0,"generation":"0a1b2c3d4e5f60718293a4b5"}`)
	put("session/demo", `{"shape_version":1,"access_token":"`+issuedTok.AccessToken+`","token_type":"Bearer","scope":"api offline_access","refresh_token":"`+
		issuedTok.RefreshToken+`","obtained_at":"`+issuedTok.ObtainedAt.Format(time.RFC3339Nano)+`","expires_at":"`+
		issuedTok.ExpiresAt().Format(time.RFC3339Nano)+`","generation":"0a1b2c3d4e5f60718293a4b5"}`)
	legacyLease := &logical.Secret{
		LeaseOptions: logical.LeaseOptions{TTL: 3540 * time.Second, Renewable: true, IssueTime: time.Now()},
		InternalData: map[string]interface{}{
			"secret_type":   secretTypeAccessToken,
			"config_name":   "demo",
			"access_token":  leaseTok.AccessToken,
			"refresh_token": leaseTok.RefreshToken,
			"generation":    "0a1b2c3d4e5f60718293a4b5",
		},
		LeaseID: "iris/creds/demo/legacy",
	}
	env.iris.ResetStats()

	resp := env.readToken("demo")
	require.Equal(t, issuedTok.AccessToken, resp.Data["access_token"], "the stored session is served")
	require.Zero(t, env.iris.Stats().Requests, "without a new grant")

	renewed, err := env.renew(legacyLease, 0)
	require.NoError(t, err)
	require.Equal(t, 1, env.iris.Stats().RefreshGrants, "the lease renews through its own refresh token")
	require.Zero(t, env.iris.Stats().RefreshReuse)

	// An update keeps the same API user: the old lease still renews.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"})
	_, err = env.renew(renewed.Secret, 0)
	require.NoError(t, err)
	stored, err := env.b.configFromStorage(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, configShapeVersion, stored.ShapeVersion)
	require.Equal(t, legacyIdentity("0a1b2c3d4e5f60718293a4b5"), stored.ID)
}

// A config of shape 2 (the current release's: an ID, no revision) keeps
// serving its session, and its first write gives it a revision that a grant
// racing the write must match: the write wins.
func TestStoredByShape2KeepsWorking(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()
	issuedTok, err := env.b.verify(ctx, &credential{
		ClientID: demoUser.ClientID, ClientSecret: demoUser.ClientSecret, Username: demoUser.Username, Password: demoUser.Password,
		Scopes: defaultScopes, TokenURL: env.iris.TokenURL, RequestTimeout: 10 * time.Second,
	})
	require.NoError(t, err)
	put := func(key, value string) {
		require.NoError(t, env.storage.Put(ctx, &logical.StorageEntry{Key: key, Value: []byte(value)}))
	}
	put("config/demo", `{"shape_version":2,"id":"5f60718293a4b50a1b2c3d4e","kind":"api_user","client_id":"`+demoUser.ClientID+
		`","client_secret":"`+demoUser.ClientSecret+`","username":"`+demoUser.Username+`","password":"`+demoUser.Password+
		`","scopes":["api","offline_access"],"token_url":"`+env.iris.TokenURL+`","revocation_url":"`+env.iris.RevocationURL+
		`","ttl":0,"max_ttl":0,"request_timeout":10000000000,"renewable_leases":false,"refresh_floor":0,"generation":"0a1b2c3d4e5f60718293a4b5"}`)
	put("session/demo", `{"shape_version":1,"access_token":"`+issuedTok.AccessToken+`","token_type":"Bearer","scope":"api offline_access","refresh_token":"`+
		issuedTok.RefreshToken+`","obtained_at":"`+issuedTok.ObtainedAt.Format(time.RFC3339Nano)+`","expires_at":"`+
		issuedTok.ExpiresAt().Format(time.RFC3339Nano)+`","generation":"0a1b2c3d4e5f60718293a4b5"}`)
	env.iris.ResetStats()

	resp := env.readToken("demo")
	require.Equal(t, issuedTok.AccessToken, resp.Data["access_token"], "the stored session is served")
	require.Zero(t, env.iris.Stats().Requests)

	// Due, and replaced through its refresh token while a ttl-only write
	// lands: the write's verifying token is the one kept.
	env.clock.Advance(2400 * time.Second)
	var once sync.Once
	env.b.afterGrant = func(string) {
		once.Do(func() { env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"}) })
	}
	env.readToken("demo")
	require.Equal(t, 1, env.iris.Stats().RefreshGrants)
	stored, err := env.b.configFromStorage(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, configShapeVersion, stored.ShapeVersion)
	require.NotEmpty(t, stored.Revision)
	require.Equal(t, "5f60718293a4b50a1b2c3d4e", stored.ID, "the same API user")
	require.Equal(t, "0a1b2c3d4e5f60718293a4b5", stored.Generation, "a ttl write keeps the generation")
	require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))
	require.Zero(t, env.iris.Stats().RefreshReuse)
}

// failingPuts is storage whose writes of one key fail, as on a node that
// cannot write.
type failingPuts struct {
	logical.InmemStorage
	key string
}

func (s *failingPuts) Put(ctx context.Context, e *logical.StorageEntry) error {
	if e.Key == s.key {
		return errors.New("storage is read-only here")
	}
	return s.InmemStorage.Put(ctx, e)
}

// A mount upgraded from v0.1.0 (no settings entry, configs of shape 1) or
// from the release before allowed_hosts (settings of max_background_grants
// only, configs of shape 2, leases with an API user ID) keeps serving the
// configs it has: the first start records the hosts they use into
// allowed_hosts with the default, and their leases and sessions are revoked
// at the revocation URL in force at the upgrade, not at one written later.
func TestUpgradeRecordsHostsInUse(t *testing.T) {
	t.Parallel()
	for _, shape := range []string{"v0.1.0", "shape 2"} {
		t.Run(shape, func(t *testing.T) {
			env := newTestEnv(t)
			ctx := context.Background()
			mint := func() *irisauth.Token {
				res, err := env.b.client.Exchange(ctx, irisauth.Endpoint{
					TokenURL: env.iris.TokenURL, ClientID: demoUser.ClientID, ClientSecret: demoUser.ClientSecret,
					Auth: irisauth.AuthBasic, AttemptTimeout: 10 * time.Second,
				}.PasswordGrant(demoUser.Username, demoUser.Password, defaultScopes))
				require.NoError(t, err)
				return res.Token
			}
			sessTok, leaseTok := mint(), mint()
			storage := &logical.InmemStorage{}
			put := func(key, value string) {
				require.NoError(t, storage.Put(ctx, &logical.StorageEntry{Key: key, Value: []byte(value)}))
			}
			gen := "0a1b2c3d4e5f60718293a4b5"
			lease := map[string]interface{}{
				"secret_type": secretTypeAccessToken, "config_name": "demo", "access_token": leaseTok.AccessToken,
				"refresh_token": leaseTok.RefreshToken, "generation": gen,
			}
			common := `"client_id":"` + demoUser.ClientID + `","client_secret":"` + demoUser.ClientSecret +
				`","username":"` + demoUser.Username + `","password":"` + demoUser.Password + `","scopes":["api","offline_access"],"token_url":"` +
				env.iris.TokenURL + `","revocation_url":"` + env.iris.RevocationURL + `","ttl":0,"max_ttl":0,"request_timeout":10000000000,"renewable_leases":true,"refresh_floor":0,"generation":"` + gen + `"`
			wantMax := defaultMaxBackgroundGrants
			if shape == "v0.1.0" {
				put("config/demo", `{"shape_version":1,`+common+`}`)
			} else {
				put("settings", `{"max_background_grants":12}`)
				wantMax = 12
				put("config/demo", `{"shape_version":2,"id":"9f8e7d6c5b4a392817161514","kind":"api_user",`+common+`}`)
				lease["api_user_id"] = "9f8e7d6c5b4a392817161514"
			}
			put("session/demo", `{"shape_version":1,"access_token":"`+sessTok.AccessToken+`","token_type":"Bearer","scope":"api offline_access","refresh_token":"`+
				sessTok.RefreshToken+`","obtained_at":"`+sessTok.ObtainedAt.Format(time.RFC3339Nano)+`","expires_at":"`+
				sessTok.ExpiresAt().Format(time.RFC3339Nano)+`","generation":"`+gen+`"}`)
			env.b, env.storage, env.sysView = env.newUpgradedBackend(storage)
			env.iris.ResetStats()

			settings := env.mustRequest(logical.ReadOperation, "settings", nil).Data
			require.Equal(t, []string{defaultAllowedHost, hostPort(env.iris.URL)}, settings["allowed_hosts"])
			require.Equal(t, wantMax, settings["max_background_grants"])
			entry, err := storage.Get(ctx, settingsStorageKey)
			require.NoError(t, err)
			require.NotNil(t, entry, "allowed_hosts recorded at the first start")
			var stored mountSettings
			require.NoError(t, entry.DecodeJSON(&stored))
			require.Equal(t, []string{defaultAllowedHost, hostPort(env.iris.URL)}, stored.AllowedHosts, "recorded at the first start")

			require.Equal(t, sessTok.AccessToken, env.readToken("demo").Data["access_token"], "the stored session is served")
			legacy := &logical.Secret{LeaseOptions: logical.LeaseOptions{TTL: time.Hour, Renewable: true, IssueTime: time.Now()}, InternalData: lease, LeaseID: "iris/creds/demo/legacy"}
			renewed, err := env.renew(legacy, 0)
			require.NoError(t, err)
			require.Equal(t, 1, env.iris.Stats().RefreshGrants, "the lease renews through its own refresh token")
			require.Equal(t, env.iris.RevocationURL, renewed.Secret.InternalData[internalRevocationURL], "and records its endpoint from now on")
			legacy2 := &logical.Secret{LeaseOptions: legacy.LeaseOptions, InternalData: map[string]interface{}{}, LeaseID: "iris/creds/demo/legacy2"}
			tok3 := mint()
			for k, v := range lease {
				legacy2.InternalData[k] = v
			}
			legacy2.InternalData["access_token"], legacy2.InternalData["refresh_token"] = tok3.AccessToken, tok3.RefreshToken

			// The operator moves revocation_url to another host it allows:
			// tokens issued before go back where they came from.
			collector := newCollector(t)
			env.allowOnly(defaultAllowedHost, hostPort(env.iris.URL), hostPort(collector.URL))
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{
				"revocation_url": collector.URL + "/revoke", "client_secret": demoUser.ClientSecret, "password": demoUser.Password, "verify": false,
			})
			cfg, err := env.b.configFromStorage(ctx, storage, "demo")
			require.NoError(t, err)
			require.Equal(t, configShapeVersion, cfg.ShapeVersion)
			require.Equal(t, env.iris.RevocationURL, cfg.LegacyRevocationURL)
			env.iris.ResetStats()
			require.NoError(t, env.revoke(legacy2))
			require.NoError(t, env.revoke(renewed.Secret))
			env.mustRequest(logical.DeleteOperation, "config/demo", nil)
			require.Equal(t, 3, env.iris.Stats().Revocations, "two leases and the session, at the URL they were issued under")
			require.Zero(t, collector.hits.Load())
			env.assertNoSecrets(demoUser)
		})
	}
}

// Where the seed cannot be stored, it is computed in memory: the upgraded
// mount's configs keep working, and nothing else is allowed.
func TestUnstoredHostSeedIsComputedInMemory(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()
	env.writeConfig("demo", demoUser, nil)
	entry, err := env.storage.Get(ctx, "config/demo")
	require.NoError(t, err)
	storage := &failingPuts{key: settingsStorageKey}
	require.NoError(t, storage.Put(ctx, entry))
	env.b, env.storage, env.sysView = env.newUpgradedBackend(storage)
	require.Contains(t, env.logs.String(), "could not store allowed_hosts")

	env.readCreds("demo")
	require.Equal(t, []string{defaultAllowedHost, hostPort(env.iris.URL)}, env.mustRequest(logical.ReadOperation, "settings", nil).Data["allowed_hosts"])
	stored, err := storage.Get(ctx, settingsStorageKey)
	require.NoError(t, err)
	require.Nil(t, stored)

	data := demoConfigData(env)
	data["token_url"] = "http://localhost:1/token"
	resp, err := env.request(logical.CreateOperation, "config/other", data)
	require.NoError(t, err)
	require.Contains(t, resp.Error().Error(), `token_url host "localhost:1" is not in allowed_hosts`)
}

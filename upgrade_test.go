package iris

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// What v0.1.0 stored keeps working after the binary is replaced: its config
// (shape 1, no ID), its shared session, and its leases (no API user ID).
func TestStoredByV010KeepsWorking(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()

	// Real tokens, so that the emulator accepts them; the stored shapes are
	// written exactly as v0.1.0 wrote them.
	issuedTok, err := env.b.verify(ctx, &apiUserConfig{
		ClientID: demoUser.ClientID, ClientSecret: demoUser.ClientSecret, Username: demoUser.Username, Password: demoUser.Password,
		Scopes: defaultScopes, TokenURL: env.iris.TokenURL, RequestTimeout: 10 * time.Second,
	})
	require.NoError(t, err)
	leaseTok, err := env.b.verify(ctx, &apiUserConfig{
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
	stored, err := env.b.configs.loadUncached(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, configShapeVersion, stored.ShapeVersion)
	require.Equal(t, legacyIdentity("0a1b2c3d4e5f60718293a4b5"), stored.ID)
}

// A config of shape 2 (the current release's: an ID, no revision) keeps
// serving its session, and its first write gives it a revision that a grant
// racing the write must match: the write wins.
func TestStoredByShape2KeepsWorking(t *testing.T) {
	env := newTestEnv(t)
	ctx := context.Background()
	issuedTok, err := env.b.verify(ctx, &apiUserConfig{
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
	stored, err := env.b.configs.loadUncached(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, configShapeVersion, stored.ShapeVersion)
	require.NotEmpty(t, stored.Revision)
	require.Equal(t, "5f60718293a4b50a1b2c3d4e", stored.ID, "the same API user")
	require.Equal(t, "0a1b2c3d4e5f60718293a4b5", stored.Generation, "a ttl write keeps the generation")
	require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))
	require.Zero(t, env.iris.Stats().RefreshReuse)
}

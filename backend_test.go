package iris

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

func TestFactoryReportsVersionAndPaths(t *testing.T) {
	t.Parallel()
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	lb, err := Factory(context.Background(), conf)
	require.NoError(t, err)
	b := lb.(*backend)
	require.Equal(t, Version, b.PluginVersion().Version)
	require.ElementsMatch(t, []string{configStoragePrefix, sessionStoragePrefix}, b.SpecialPaths().SealWrapStorage)

	for _, path := range []string{"config/demo", "config/", "creds/demo", "token/demo"} {
		resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.HelpOperation, Path: path, Storage: conf.StorageView})
		require.NoError(t, err, path)
		require.NotEmpty(t, resp.Data["help"], path)
	}
}

func TestInvalidateDropsCachedConfigAndSession(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	ctx := context.Background()
	env.mustRequest(logical.ReadOperation, "token/demo", nil)

	cfg, err := env.b.config(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, demoUser.Username, cfg.Username)

	// Replication changes storage underneath the plugin.
	changed := *cfg
	changed.Username = "someone-else"
	entry, err := logical.StorageEntryJSON(configStoragePrefix+"demo", &changed)
	require.NoError(t, err)
	require.NoError(t, env.storage.Put(ctx, entry))

	cfg, err = env.b.config(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, demoUser.Username, cfg.Username, "the cache serves until invalidated")

	env.b.invalidate(ctx, configStoragePrefix+"demo")
	cfg, err = env.b.config(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Equal(t, "someone-else", cfg.Username)

	// A replicated session change is picked up the same way.
	sess, err := env.b.session(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.NotNil(t, sess)
	require.NoError(t, env.storage.Delete(ctx, sessionStoragePrefix+"demo"))
	sess, err = env.b.session(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.NotNil(t, sess, "the cache serves until invalidated")
	env.b.invalidate(ctx, sessionStoragePrefix+"demo")
	sess, err = env.b.session(ctx, env.storage, "demo")
	require.NoError(t, err)
	require.Nil(t, sess)
}

// The backend's view of the same: whatever the failure, what callers and
// logs see has none of the user's secrets.
func TestBackendErrorsNeverContainSecrets(t *testing.T) {
	t.Parallel()
	faults := []iristest.Fault{
		{Status: 400, ContentType: "application/json", Body: `{"error":"invalid_grant","error_description":"` + demoUser.Password + `"}`},
		{Status: 500, ContentType: "text/html", Body: demoUser.Password + demoUser.ClientSecret},
		{Status: 200, ContentType: "application/json", Body: `{"access_token":"x","token_type":"` + demoUser.ClientSecret + `"}`},
		{Status: 429, RetryAfter: "1"},
	}
	for i, f := range faults {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
			lease := issued(env.readCreds("demo"), time.Now())
			// Too close to expiry for token/ to serve the old token.
			env.clock.Advance(3500 * time.Second)
			env.iris.SetFault(&f)
			for _, path := range []string{"creds/demo", "token/demo"} {
				_, err := env.request(logical.ReadOperation, path, nil)
				require.Error(t, err)
			}
			_, err := env.renew(lease, 0)
			require.Error(t, err)
			env.assertNoSecrets(demoUser)
		})
	}
}

// The OpenAPI operation IDs name what each operation acts on; clients
// generated from Vault's document use them as function names. (The e2e
// OpenAPI test checks the same names in a real Vault's document.)
func TestOpenAPIOperationIDs(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.sysView.PluginEnvironment = &logical.PluginEnvironment{VaultVersion: "1.21.0"}
	resp, err := env.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.HelpOperation, Storage: env.storage, MountPoint: testMount})
	require.NoError(t, err)
	doc, ok := resp.Data["openapi"].(*framework.OASDocument)
	require.True(t, ok, "the root help has no OpenAPI document")
	got := map[string]string{}
	for path, item := range doc.Paths {
		for method, op := range map[string]*framework.OASOperation{"get": item.Get, "post": item.Post, "delete": item.Delete} {
			if op != nil {
				got[method+" "+path] = op.OperationID
			}
		}
	}
	require.Equal(t, map[string]string{
		"get /config/":          "iris-list-credentials",
		"get /config/{name}":    "iris-read-credential",
		"post /config/{name}":   "iris-write-credential",
		"delete /config/{name}": "iris-delete-credential",
		"get /creds/{name}":     "iris-generate-access-token",
		"get /token/{name}":     "iris-read-shared-token",
		"get /status":           "iris-read-mount-status",
		"get /status/":          "iris-list-credential-statuses",
		"get /status/{name}":    "iris-read-credential-status",
		"get /settings":         "iris-read-mount-settings",
		"post /settings":        "iris-write-mount-settings",
		"get /metrics":          "iris-read-metrics",
	}, got)
}

//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pluginPath is one path the plugin serves, with what its path-help and
// Vault's OpenAPI document must say about it. Every path the plugin serves
// must be listed here: the OpenAPI test fails on any it does not know.
type pluginPath struct {
	helpPath string // argument to `vault path-help`
	route    string // the framework pattern path-help reports
	openAPI  string // key under "paths" in the OpenAPI document
	// operations maps each HTTP method to its operationId, which names
	// what it acts on: clients generated from the document use it.
	operations map[string]string
	fields     []string // parameters path-help must document
}

var pluginPaths = []pluginPath{
	{
		helpPath:   mountPath + "/config/demo",
		route:      "^config/(?P<name>.+)$",
		openAPI:    "/" + mountPath + "/config/{name}",
		operations: map[string]string{"get": "iris-read-credential", "post": "iris-write-credential", "delete": "iris-delete-credential"},
		fields: []string{"name", "kind", "account_id", "client_id", "client_secret", "username", "password", "scopes", "token_url",
			"revocation_url", "ttl", "max_ttl", "request_timeout", "renewable_leases", "refresh_floor", "verify"},
	},
	{
		helpPath:   mountPath + "/config/",
		route:      "^config/?$",
		openAPI:    "/" + mountPath + "/config/",
		operations: map[string]string{"get": "iris-list-credentials"}, // LIST is GET with ?list=true
	},
	{
		helpPath:   mountPath + "/creds/demo",
		route:      "^creds/(?P<name>.+)$",
		openAPI:    "/" + mountPath + "/creds/{name}",
		operations: map[string]string{"get": "iris-generate-access-token"},
		fields:     []string{"name"},
	},
	{
		// The shared-token path has tests of its own, which cover its
		// behaviour; it is listed so that help and OpenAPI stay checked.
		helpPath:   mountPath + "/token/demo",
		route:      "^token/(?P<name>.+)$",
		openAPI:    "/" + mountPath + "/token/{name}",
		operations: map[string]string{"get": "iris-read-shared-token"},
		fields:     []string{"name"},
	},
	{
		// TestTrust covers the behaviour of status/.
		helpPath:   mountPath + "/status/demo",
		route:      "^status/(?P<name>.+)$",
		openAPI:    "/" + mountPath + "/status/{name}",
		operations: map[string]string{"get": "iris-read-credential-status"},
		fields:     []string{"name"},
	},
	{
		helpPath:   mountPath + "/status/",
		route:      "^status/?$",
		openAPI:    "/" + mountPath + "/status/",
		operations: map[string]string{"get": "iris-list-credential-statuses"}, // LIST is GET with ?list=true
	},
	{
		// The mount-wide status: the same pattern, read without a slash.
		helpPath:   mountPath + "/status",
		route:      "^status/?$",
		openAPI:    "/" + mountPath + "/status",
		operations: map[string]string{"get": "iris-read-mount-status"},
	},
	{
		// settings has tests of its own; the consumers' operator policy and
		// the unit tests cover its behaviour.
		helpPath:   mountPath + "/settings",
		route:      "^settings$",
		openAPI:    "/" + mountPath + "/settings",
		operations: map[string]string{"get": "iris-read-mount-settings", "post": "iris-write-mount-settings"},
		fields:     []string{"max_background_grants", "allowed_hosts", "metrics_per_credential"},
	},
	{
		helpPath:   mountPath + "/metrics",
		route:      "^metrics$",
		openAPI:    "/" + mountPath + "/metrics",
		operations: map[string]string{"get": "iris-read-metrics"},
	},
}

// TestPlugin runs the plugin in one shared Vault dev server. The subtests
// run in order and each uses an emulator and config names of its own; the
// secret-leak and data-race checks run once the server has stopped.
func TestPlugin(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	t.Run("Registration", func(t *testing.T) { testRegistration(t, v) })
	t.Run("PathHelp", func(t *testing.T) { testPathHelp(t, v) })
	t.Run("OpenAPI", func(t *testing.T) { testOpenAPI(t, v) })
	t.Run("ConfigLifecycle", func(t *testing.T) { testConfigLifecycle(t, v) })
	t.Run("ConfigRejected", func(t *testing.T) { testConfigRejected(t, v) })
	t.Run("ConfigValidation", func(t *testing.T) { testConfigValidation(t, v) })
	t.Run("CredsLease", func(t *testing.T) { testCredsLease(t, v) })
	t.Run("CredsUnconfigured", func(t *testing.T) { testCredsUnconfigured(t, v) })
	t.Run("RenewableLeases", func(t *testing.T) { testRenewableLeases(t, v) })
	t.Run("RenewableLeasesLegacyUser", func(t *testing.T) { testRenewableLeasesLegacyUser(t, v) })
	t.Run("Revoke", func(t *testing.T) { testRevoke(t, v) })
	t.Run("RevokeAfterConfigDeleted", func(t *testing.T) { testRevokeAfterConfigDeleted(t, v) })
	t.Run("IRISDownAndDisable", func(t *testing.T) { testIRISDownAndDisable(t, v) })
	t.Run("AgentTemplate", func(t *testing.T) { testAgentTemplate(t, v) })
	t.Run("PluginReload", func(t *testing.T) { testPluginReload(t, v) })
	t.Run("LeakCheckSeesEverything", func(t *testing.T) { testLeakCheckSeesEverything(t, v) })
}

func testRegistration(t *testing.T, v *vaultServer) {
	sha := fileSHA256(t, pluginBin)

	var list struct {
		Details []struct {
			Name, Type, Version string
			Builtin             bool
		} `json:"details"`
	}
	v.cliJSON(t, &list, "plugin", "list", "-format=json", "-detailed", "secret")
	found := false
	for _, p := range list.Details {
		if p.Name == pluginName {
			assert.Equal(t, pluginVersion, p.Version, "vault plugin list")
			assert.False(t, p.Builtin)
			found = true
		}
	}
	assert.True(t, found, "vault plugin list does not show %s", pluginName)

	var info struct {
		Version string `json:"version"`
		SHA256  string `json:"sha256"`
	}
	v.cliJSON(t, &info, "plugin", "info", "-format=json", "-version="+pluginVersion, "secret", pluginName)
	assert.Equal(t, sha, info.SHA256)
	assert.Equal(t, pluginVersion, info.Version)

	var mounts map[string]struct {
		Type                 string `json:"type"`
		PluginVersion        string `json:"plugin_version"`
		RunningPluginVersion string `json:"running_plugin_version"`
		RunningSHA256        string `json:"running_sha256"`
	}
	v.cliJSON(t, &mounts, "secrets", "list", "-format=json", "-detailed")
	m, ok := mounts[mountPath+"/"]
	require.True(t, ok, "no %s/ mount", mountPath)
	assert.Equal(t, pluginName, m.Type)
	assert.Equal(t, pluginVersion, m.PluginVersion)
	assert.Equal(t, pluginVersion, m.RunningPluginVersion, "the plugin reports a version other than it was registered with")
	assert.Equal(t, sha, m.RunningSHA256)

	t.Run("WrongSHA256", func(t *testing.T) {
		// Registration accepts any SHA-256; mounting must then refuse a
		// binary that does not match it.
		v.mustCLI(t, "plugin", "register", "-sha256="+strings.Repeat("0", 64), "-command="+pluginName, "secret", "iris-wrong-sha")
		t.Cleanup(func() { v.cli(t, "plugin", "deregister", "secret", "iris-wrong-sha") })
		res := v.cliFails(t, "secrets", "enable", "-path=iris-wrong-sha", "iris-wrong-sha")
		assert.Contains(t, res.Stderr, "checksums did not match")
		var mounts map[string]any
		v.cliJSON(t, &mounts, "secrets", "list", "-format=json")
		assert.NotContains(t, mounts, "iris-wrong-sha/")
	})

	t.Run("WrongVersion", func(t *testing.T) {
		res := v.cliFails(t, "plugin", "register", "-sha256="+sha, "-command="+pluginName, "-version=v99.0.0", "secret", "iris-wrong-version")
		assert.Contains(t, res.Stderr, "version mismatch")
	})
}

func testPathHelp(t *testing.T, v *vaultServer) {
	root := v.mustCLI(t, "path-help", mountPath+"/")
	for _, p := range pluginPaths {
		assert.Contains(t, root, p.route, "path-help %s/ does not list a path", mountPath)
	}
	for _, p := range pluginPaths {
		t.Run(p.route, func(t *testing.T) {
			out := v.mustCLI(t, "path-help", p.helpPath)
			assert.Contains(t, out, "Matching Route: "+p.route)
			synopsis := helpSynopsis(out)
			assert.NotEmpty(t, synopsis, "path-help %s has no synopsis:\n%s", p.helpPath, out)
			for _, f := range p.fields {
				assert.Regexp(t, `(?m)^\s+`+f+` \(`, out, "path-help %s does not document %s", p.helpPath, f)
			}
		})
	}
}

// helpSynopsis is the paragraph after the "Matching Route" header.
func helpSynopsis(out string) string {
	_, rest, ok := strings.Cut(out, "Matching Route:")
	if !ok {
		return ""
	}
	paras := strings.Split(strings.TrimSpace(rest), "\n\n")
	if len(paras) < 2 {
		return ""
	}
	return strings.TrimSpace(paras[1])
}

func testOpenAPI(t *testing.T, v *vaultServer) {
	res := v.raw(t, "GET", "sys/internal/specs/openapi", nil)
	require.Equal(t, 200, res.Status, res.Raw)
	paths, ok := res.Body["paths"].(map[string]any)
	require.True(t, ok, "OpenAPI document has no paths")

	known := map[string]bool{}
	for _, p := range pluginPaths {
		known[p.openAPI] = true
		item, ok := paths[p.openAPI].(map[string]any)
		if !assert.True(t, ok, "OpenAPI document lacks %s", p.openAPI) {
			continue
		}
		for method, id := range p.operations {
			op, ok := item[method].(map[string]any)
			if !assert.True(t, ok, "%s lacks %s", p.openAPI, method) {
				continue
			}
			assert.Equal(t, id, op["operationId"], "%s %s operationId", method, p.openAPI)
		}
	}
	if p, ok := paths["/"+mountPath+"/config/"].(map[string]any); ok {
		get, _ := p["get"].(map[string]any)
		assert.Contains(t, fmt.Sprint(get["parameters"]), "list", "config/ is not documented as a LIST")
	}
	for path := range paths {
		if strings.HasPrefix(path, "/"+mountPath+"/") && !known[path] {
			t.Errorf("the plugin serves %s, which pluginPaths does not list: add it, with its tests", path)
		}
	}
}

func testConfigLifecycle(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "lifecycle"

	v.writeConfig(t, name, em)
	assert.Equal(t, 1, em.Stats().PasswordGrants, "a config write verifies the credentials with one grant")

	data := v.readConfigRaw(t, name)
	assert.NotContains(t, data, "client_secret")
	assert.NotContains(t, data, "password")
	cfg := v.readConfig(t, name)
	assert.Equal(t, configData{
		ClientID:       em.User.ClientID,
		Username:       em.User.Username,
		Scopes:         []string{"api", "offline_access"},
		TokenURL:       em.TokenURL,
		RequestTimeout: 10,
	}, cfg)

	apiRead := v.raw(t, "GET", mountPath+"/config/"+name, nil)
	require.Equal(t, 200, apiRead.Status)
	apiData, _ := apiRead.Body["data"].(map[string]any)
	assert.NotContains(t, apiData, "client_secret")
	assert.NotContains(t, apiData, "password")

	assert.Contains(t, v.listConfigs(t), name)

	// An update names only what changes, and is verified again.
	v.mustCLI(t, "write", mountPath+"/config/"+name, "ttl=5m", "scopes=api", "renewable_leases=true")
	cfg = v.readConfig(t, name)
	assert.Equal(t, 300, cfg.TTL)
	assert.Equal(t, []string{"api"}, cfg.Scopes)
	assert.True(t, cfg.RenewableLeases)
	assert.Equal(t, em.User.ClientID, cfg.ClientID)
	assert.Equal(t, 2, em.Stats().PasswordGrants)

	v.mustCLI(t, "write", mountPath+"/config/"+name, "verify=false", "ttl=200")
	assert.Equal(t, 200, v.readConfig(t, name).TTL)
	assert.Equal(t, 2, em.Stats().PasswordGrants, "verify=false must not call IRIS")

	v.mustCLI(t, "delete", mountPath+"/config/"+name)
	res := v.cli(t, "read", mountPath+"/config/"+name)
	assert.Equal(t, 2, res.ExitCode, "a deleted config reads as not found: %s", res)
	assert.NotContains(t, v.listConfigs(t), name)
	assert.Equal(t, 404, v.raw(t, "GET", mountPath+"/config/"+name, nil).Status)
	assert.Equal(t, 400, v.raw(t, "GET", mountPath+"/creds/"+name, nil).Status)
}

func testConfigRejected(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)

	t.Run("WrongPassword", func(t *testing.T) {
		res := v.cliFails(t, configArgs("rejected", em, "password=wrong-"+randomHex(8))...)
		assert.Contains(t, res.Stderr, "invalid_grant")
		assert.Contains(t, res.Stderr, "Code: 400")
		assert.Equal(t, 404, v.raw(t, "GET", mountPath+"/config/rejected", nil).Status, "a rejected config must not be stored")
		assert.NotContains(t, v.listConfigs(t), "rejected")
	})

	t.Run("WrongClientSecret", func(t *testing.T) {
		body := map[string]any{
			"client_id": em.User.ClientID, "client_secret": "wrong-" + randomHex(8),
			"username": em.User.Username, "password": em.User.Password, "token_url": em.TokenURL,
		}
		res := v.raw(t, "PUT", mountPath+"/config/rejected2", body)
		assert.Equal(t, 400, res.Status, res.Raw)
		assert.Contains(t, res.errorsText(), "invalid_client")
		assert.Equal(t, 404, v.raw(t, "GET", mountPath+"/config/rejected2", nil).Status)
	})

	t.Run("UpdateKeepsOldCredentials", func(t *testing.T) {
		v.writeConfig(t, "kept", em)
		res := v.cliFails(t, "write", mountPath+"/config/kept", "password=wrong-"+randomHex(8))
		assert.Contains(t, res.Stderr, "invalid_grant")
		// The stored (right) password still works.
		v.readCreds(t, "kept")
	})

	t.Run("VerifyFalseStoresWithoutCalling", func(t *testing.T) {
		before := em.Stats().Requests
		v.mustCLI(t, configArgs("unverified", em, "password=wrong-"+randomHex(8), "verify=false")...)
		assert.Equal(t, before, em.Stats().Requests)
		res := v.raw(t, "GET", mountPath+"/creds/unverified", nil)
		assert.Equal(t, 502, res.Status, res.Raw)
		assert.Contains(t, res.errorsText(), "invalid_grant")
	})

}

func testConfigValidation(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	good := func() map[string]any {
		return map[string]any{
			"client_id": em.User.ClientID, "client_secret": em.User.ClientSecret,
			"username": em.User.Username, "password": em.User.Password, "token_url": em.TokenURL,
		}
	}
	cases := []struct {
		name, path string
		edit       func(map[string]any)
		wantError  string
	}{
		{"UnknownField", "config/typo", func(b map[string]any) { b["client-secret"] = "x" }, "unknown field"},
		{"BadName", "config/-bad", nil, "invalid name"},
		{"PlainHTTPToRemoteHost", "config/http", func(b map[string]any) { b["token_url"] = "http://auth.example.com/token" }, "https"},
		{"CredentialsInURL", "config/userinfo", func(b map[string]any) { b["token_url"] = "https://u:p@auth.example.com/token" }, "credentials"},
		{"MissingPassword", "config/nopw", func(b map[string]any) { delete(b, "password") }, "password is required"},
		{"TTLAboveMaxTTL", "config/ttls", func(b map[string]any) { b["ttl"] = "2h"; b["max_ttl"] = "1h" }, "max_ttl"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := good()
			if c.edit != nil {
				c.edit(body)
			}
			res := v.raw(t, "PUT", mountPath+"/"+c.path, body)
			assert.Equal(t, 400, res.Status, res.Raw)
			assert.Contains(t, res.errorsText(), c.wantError)
		})
	}
	t.Run("MalformedSecretNotEchoed", func(t *testing.T) {
		// Vault's framework would quote a value it cannot convert (a key
		// given twice, a JSON list or object) in an error that Vault logs
		// and audits; the plugin refuses it first.
		body := good()
		body["password"] = []string{em.User.Password, "typo"}
		res := v.raw(t, "PUT", mountPath+"/config/malformed", body)
		assert.Equal(t, 400, res.Status, res.Raw)
		assert.Contains(t, res.errorsText(), "password must be a single string")
		// The leak check at the end looks at the response and the log.
	})
	assert.Zero(t, em.Stats().Requests, "invalid configs must be refused before calling IRIS")
	assert.Empty(t, v.listConfigsMatching(t, "typo", "-bad", "http", "userinfo", "nopw", "ttls"))
}

func (v *vaultServer) listConfigsMatching(t testing.TB, names ...string) []string {
	var out []string
	for _, n := range v.listConfigs(t) {
		if slices.Contains(names, n) {
			out = append(out, n)
		}
	}
	return out
}

func testCredsLease(t *testing.T, v *vaultServer) {
	const lifetime = 600 * time.Second
	em := newEmulator(t, v.rec, lifetime)
	const name = "creds"
	v.writeConfig(t, name, em)

	before := time.Now()
	lt := v.readCreds(t, name)
	after := time.Now()

	assert.True(t, strings.HasPrefix(lt.LeaseID, mountPath+"/creds/"+name+"/"), lt.LeaseID)
	assert.False(t, lt.Renewable, "leases are not renewable by default")
	// The lease ends a margin (10%, at most 60 s) before the token.
	assert.LessOrEqual(t, lt.LeaseDuration, 540)
	assert.GreaterOrEqual(t, lt.LeaseDuration, 530)
	assert.Equal(t, "Bearer", lt.Data.TokenType)
	// A lease that cannot be renewed has no use for a refresh token, so
	// the read does not ask for one: it would stay alive at IRIS for nobody.
	assert.Equal(t, "api", lt.Data.Scope)
	issued := em.issuedFor(t, lt.Data.AccessToken)
	assert.Equal(t, "password", issued.GrantType)
	assert.Equal(t, "api", issued.Scope)
	assert.Empty(t, issued.RefreshToken, "a non-renewable creds/ read asked for offline_access")
	if grants := em.requestsOf("password"); assert.NotEmpty(t, grants) {
		assert.Equal(t, "api", grants[len(grants)-1].Scope, "the creds/ read requested scopes beyond the lease's needs")
	}
	assert.InDelta(t, 600, lt.Data.ExpiresIn, 5)
	expiresAt := lt.Data.expiresAt(t)
	assert.WithinRange(t, expiresAt, before.Add(lifetime-2*time.Second), after.Add(lifetime))

	active, tokenExpiry := em.Introspect(lt.Data.AccessToken)
	assert.True(t, active, "the access token Vault returned is not active at IRIS")
	lease := v.lookupLease(t, lt.LeaseID)
	assert.False(t, lease.Renewable)
	assert.False(t, lease.ExpireTime.After(tokenExpiry), "lease ends %s, after its token (%s)", lease.ExpireTime, tokenExpiry)

	res := v.cliFails(t, "lease", "renew", lt.LeaseID)
	assert.Contains(t, res.Stderr, "not renewable")
	assert.Empty(t, em.refreshRequests())

	lt2 := v.readCreds(t, name)
	assert.NotEqual(t, lt.LeaseID, lt2.LeaseID)
	assert.NotEqual(t, lt.Data.AccessToken, lt2.Data.AccessToken, "each read gets a token of its own")
	assert.Equal(t, 3, em.Stats().PasswordGrants, "one grant to verify, one per read")

	t.Run("ConfigTTLCaps", func(t *testing.T) {
		v.mustCLI(t, "write", mountPath+"/config/"+name, "ttl=30s", "verify=false")
		assert.LessOrEqual(t, v.readCreds(t, name).LeaseDuration, 30)
	})

	t.Run("ShortLivedToken", func(t *testing.T) {
		v.mustCLI(t, "write", mountPath+"/config/"+name, "ttl=0", "verify=false")
		em.SetTokenLifetime(20 * time.Second)
		lt := v.readCreds(t, name)
		assert.LessOrEqual(t, lt.LeaseDuration, 18)
		assert.GreaterOrEqual(t, lt.LeaseDuration, 12)
		_, tokenExpiry := em.Introspect(lt.Data.AccessToken)
		assert.False(t, v.lookupLease(t, lt.LeaseID).ExpireTime.After(tokenExpiry))
	})
}

func testCredsUnconfigured(t *testing.T, v *vaultServer) {
	res := v.raw(t, "GET", mountPath+"/creds/nobody", nil)
	assert.Equal(t, 400, res.Status, res.Raw)
	assert.Contains(t, res.errorsText(), "nobody")
	cli := v.cli(t, "read", mountPath+"/creds/nobody")
	assert.Equal(t, 2, cli.ExitCode, "%s", cli)

	res = v.raw(t, "GET", mountPath+"/creds/-bad", nil)
	assert.Equal(t, 400, res.Status, res.Raw)
}

func testRenewableLeases(t *testing.T, v *vaultServer) {
	const lifetime = 300 * time.Second
	em := newEmulator(t, v.rec, lifetime)
	const name = "renewable"
	v.writeConfig(t, name, em, "renewable_leases=true")

	lt := v.readCreds(t, name)
	assert.True(t, lt.Renewable)
	assert.LessOrEqual(t, lt.LeaseDuration, 270)
	// A renewable lease keeps a refresh token, so it asks for one.
	assert.Equal(t, "api offline_access", lt.Data.Scope)
	first := em.issuedFor(t, lt.Data.AccessToken)
	require.Equal(t, "password", first.GrantType)
	require.NotEmpty(t, first.RefreshToken, "the emulator issued no refresh token")

	// A renewal swaps in a new access token through the refresh grant.
	r1 := v.renewLease(t, lt.LeaseID)
	assert.Equal(t, lt.LeaseID, r1.LeaseID)
	require.NotEmpty(t, r1.Data.AccessToken, "vault lease renew printed no new token")
	assert.NotEqual(t, lt.Data.AccessToken, r1.Data.AccessToken)
	active, _ := em.Introspect(r1.Data.AccessToken)
	assert.True(t, active)
	refreshes := em.refreshRequests()
	require.Len(t, refreshes, 1)
	assert.Equal(t, first.RefreshToken, refreshes[0].RefreshToken, "the renewal did not use the lease's refresh token")
	second := em.issuedFor(t, r1.Data.AccessToken)
	assert.Equal(t, "refresh_token", second.GrantType)
	require.NotEmpty(t, second.RefreshToken)

	// The next renewal must use the rotated refresh token, and even a 24h
	// increment must not outlive the token it returns.
	r2 := v.renewLease(t, lt.LeaseID, "-increment=24h")
	require.NotEmpty(t, r2.Data.AccessToken)
	assert.NotEqual(t, r1.Data.AccessToken, r2.Data.AccessToken)
	refreshes = em.refreshRequests()
	require.Len(t, refreshes, 2)
	assert.Equal(t, second.RefreshToken, refreshes[1].RefreshToken, "the second renewal did not use the rotated refresh token")
	assert.LessOrEqual(t, r2.LeaseDuration, int(lifetime/time.Second))

	_, tokenExpiry := em.Introspect(r2.Data.AccessToken)
	lease := v.lookupLease(t, lt.LeaseID)
	assert.True(t, lease.Renewable)
	assert.False(t, lease.ExpireTime.After(tokenExpiry), "after -increment=24h the lease ends %s, after its token (%s)", lease.ExpireTime, tokenExpiry)
	assert.False(t, lease.ExpireTime.After(r2.Data.expiresAt(t)), "lease outlives the expires_at it reported")

	st := em.Stats()
	assert.Zero(t, st.RefreshReuse, "a refresh token was used twice")
	assert.Zero(t, st.Rejected)
	assert.Equal(t, 2, st.RefreshGrants)
	assert.Equal(t, 2, st.PasswordGrants, "one to verify, one for the read; renewals must refresh")

	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	v.waitLeaseGone(t, lt.LeaseID)
}

// An API user that gets no refresh tokens: renewing its
// leases falls back to the password grant.
func testRenewableLeasesLegacyUser(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, 300*time.Second, legacyUser)
	const name = "legacy"
	v.writeConfig(t, name, em, "renewable_leases=true")
	lt := v.readCreds(t, name)
	r := v.renewLease(t, lt.LeaseID)
	require.NotEmpty(t, r.Data.AccessToken)
	assert.NotEqual(t, lt.Data.AccessToken, r.Data.AccessToken)
	st := em.Stats()
	assert.Zero(t, st.RefreshGrants)
	assert.Zero(t, st.Rejected, "the plugin sent a refresh grant without a refresh token")
	assert.Equal(t, 3, st.PasswordGrants)
}

func testRevoke(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "revoke"
	v.writeConfig(t, name, em, "revocation_url="+em.RevocationURL)

	var leases []leasedToken
	for range 3 {
		leases = append(leases, v.readCreds(t, name))
	}

	v.mustCLI(t, "lease", "revoke", leases[0].LeaseID)
	v.waitLeaseGone(t, leases[0].LeaseID)
	exists, _ := v.leaseExists(t, leases[1].LeaseID)
	assert.True(t, exists, "revoking one lease revoked another")
	eventually(t, 10*time.Second, "the revocation to reach IRIS", func() (bool, string) {
		active, _ := em.Introspect(leases[0].Data.AccessToken)
		return !active, "the revoked lease's token is still active at IRIS"
	})

	v.mustCLI(t, "lease", "revoke", "-prefix", mountPath+"/creds/"+name)
	for _, l := range leases[1:] {
		v.waitLeaseGone(t, l.LeaseID)
	}
	res := v.cli(t, "list", "-format=json", "sys/leases/lookup/"+mountPath+"/creds/"+name)
	assert.Equal(t, 2, res.ExitCode, "leases left after revoke -prefix: %s", res)
	eventually(t, 10*time.Second, "every revocation to reach IRIS", func() (bool, string) {
		n := em.Stats().Revocations
		return n >= 3, fmt.Sprintf("%d revocations", n)
	})
	for _, l := range leases {
		active, _ := em.Introspect(l.Data.AccessToken)
		assert.False(t, active)
	}
}

func testRevokeAfterConfigDeleted(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "deleted"
	v.writeConfig(t, name, em, "renewable_leases=true", "revocation_url="+em.RevocationURL)
	renewable := v.readCreds(t, name)
	v.mustCLI(t, "write", mountPath+"/config/"+name, "renewable_leases=false", "verify=false")
	fixed := v.readCreds(t, name)
	// The config write revoked its verification grant's refresh token.
	v.mustCLI(t, "delete", mountPath+"/config/"+name)
	// Deleting the config revoked its session's refresh token; from here
	// on nothing may reach IRIS.
	before := em.Stats()

	res := v.cliFails(t, "lease", "renew", renewable.LeaseID)
	assert.Contains(t, res.Stderr, "Code: 400", "%s", res)
	assert.Contains(t, res.Stderr, "the credential that issued this lease no longer exists at "+mountPath+"/config/"+name)
	assert.Contains(t, res.Stderr, "read "+mountPath+"/creds/"+name+" again")
	assert.Equal(t, before.Requests, em.Stats().Requests, "a renewal without its API user called IRIS")

	for _, l := range []leasedToken{renewable, fixed} {
		v.mustCLI(t, "lease", "revoke", l.LeaseID)
		v.waitLeaseGone(t, l.LeaseID)
	}
	assert.Equal(t, before.Revocations, em.Stats().Revocations, "with its config gone the plugin cannot have called IRIS")
}

// testIRISDownAndDisable uses a second mount, which Vault serves from the
// same multiplexed plugin process: with IRIS gone, reads fail with a status
// that says "retry later", and disabling the mount still revokes its leases.
func testIRISDownAndDisable(t *testing.T, v *vaultServer) {
	const mount = "iris-second"
	v.enableIRIS(t, mount, pluginVersion)
	em := newEmulator(t, v.rec, time.Hour)
	args := configArgs("down", em, "revocation_url="+em.RevocationURL, "renewable_leases=true")
	args[1] = mount + "/config/down"
	v.mustCLI(t, args...)
	var leases []string
	for range 2 {
		var lt leasedToken
		v.cliJSON(t, &lt, "read", "-format=json", mount+"/creds/down")
		leases = append(leases, lt.LeaseID)
	}

	em.Close()
	res := v.raw(t, "GET", mount+"/creds/down", nil)
	assert.Equal(t, 503, res.Status, res.Raw)
	assert.Contains(t, res.errorsText(), "could not be reached")
	renew := v.cliFails(t, "lease", "renew", leases[0])
	assert.Contains(t, renew.Stderr, "could not be reached")

	v.mustCLI(t, "secrets", "disable", mount)
	for _, id := range leases {
		exists, _ := v.leaseExists(t, id)
		assert.False(t, exists, "lease %s survived disabling its mount", id)
	}
	// The first mount, served by the same plugin process, is still there.
	assert.Contains(t, v.mustCLI(t, "path-help", mountPath+"/creds/x"), "Matching Route")
}

// testAgentTemplate renders creds/ through Vault Agent. A non-renewable lease
// ends before its token, and Agent re-reads it at 85–95% of the lease, so the
// rendered token is replaced before it expires.
func testAgentTemplate(t *testing.T, v *vaultServer) {
	const lifetime = 12 * time.Second
	em := newEmulator(t, v.rec, lifetime)
	const name = "agent"
	v.writeConfig(t, name, em)

	a := startAgent(t, v, `{{ with secret "`+mountPath+`/creds/`+name+`" }}{{ .Data.access_token }}{{ end }}`)
	first := strings.TrimSpace(a.waitRendered(t, 30*time.Second, "Agent to render a token", func(s string) bool {
		return strings.TrimSpace(s) != ""
	}))
	active, firstExpiry := em.Introspect(first)
	require.True(t, active, "Agent rendered a token IRIS does not know or that is not active")

	second := strings.TrimSpace(a.waitRendered(t, 3*lifetime, "Agent to render a new token", func(s string) bool {
		s = strings.TrimSpace(s)
		return s != "" && s != first
	}))
	seenAt := time.Now()
	active, _ = em.Introspect(second)
	assert.True(t, active)
	assert.True(t, seenAt.Before(firstExpiry), "Agent replaced the token only after it had expired")
}

func testPluginReload(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, 300*time.Second)
	const name = "reload"
	v.writeConfig(t, name, em, "renewable_leases=true")
	lt := v.readCreds(t, name)

	out := v.mustCLI(t, server.pluginReloadArgs("secret", pluginName)...)
	assert.Contains(t, out, "Reloaded")

	assert.Equal(t, em.User.ClientID, v.readConfig(t, name).ClientID)
	v.readCreds(t, name)
	r := v.renewLease(t, lt.LeaseID)
	require.NotEmpty(t, r.Data.AccessToken)
	refreshes := em.refreshRequests()
	require.Len(t, refreshes, 1)
	assert.Equal(t, em.issuedFor(t, lt.Data.AccessToken).RefreshToken, refreshes[0].RefreshToken,
		"the reloaded plugin did not carry on with the lease's refresh token")
	assert.Zero(t, em.Stats().RefreshReuse)
	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	v.waitLeaseGone(t, lt.LeaseID)

	var mounts map[string]struct {
		RunningPluginVersion string `json:"running_plugin_version"`
	}
	v.cliJSON(t, &mounts, "secrets", "list", "-format=json", "-detailed")
	assert.Equal(t, pluginVersion, mounts[mountPath+"/"].RunningPluginVersion)
}

// testLeakCheckSeesEverything is the positive control for the secret-leak
// check that runs when the server stops: it proves the check reads outputs
// that do hold token values and a log in which the plugin logs at debug and
// Vault at trace level, so that finding no secret means something.
func testLeakCheckSeesEverything(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	v.writeConfig(t, "leakcheck", em)
	lt := v.readCreds(t, "leakcheck")
	assert.Positive(t, v.rec.outputsContaining(lt.Data.AccessToken), "the recorder missed a creds read")
	// The leak check registers every token the emulator issued, from its
	// own records: the token Vault handed out must be among them.
	is, ok := em.IssuanceOf(lt.Data.AccessToken)
	assert.True(t, ok && is.Answered && is.AccessToken == lt.Data.AccessToken, "the emulator has no record of the token it issued")

	outputs, logs, secrets := v.rec.counts()
	assert.Positive(t, outputs)
	assert.Positive(t, logs)
	assert.Positive(t, secrets)

	eventually(t, 10*time.Second, "the plugin's debug log to reach Vault's log", func() (bool, string) {
		b, err := os.ReadFile(v.logPath)
		if err != nil {
			return false, err.Error()
		}
		log := string(b)
		return strings.Contains(log, "[TRACE]") && strings.Contains(log, "IRIS token request succeeded"),
			"no plugin debug line in the log"
	})
}

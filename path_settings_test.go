package iris

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// collector is a host that must never be called: it counts whatever reaches
// it.
type collector struct {
	*httptest.Server
	hits atomic.Int64
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"collected","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(c.Close)
	return c
}

// hostPort is the host:port part of an http://host:port URL.
func hostPort(rawURL string) string { return strings.TrimPrefix(rawURL, "http://") }

// allowOnly narrows the mount to Trackunit and the emulator's own port, so
// that another loopback port is a host not allowed.
func (env *testEnv) allowOnly(hosts ...string) {
	env.t.Helper()
	env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{"allowed_hosts": hosts})
}

func TestAllowedHostsValidation(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	read := func() []string {
		return env.mustRequest(logical.ReadOperation, "settings", nil).Data["allowed_hosts"].([]string)
	}
	require.Equal(t, []string{"auth.trackunit.com", "127.0.0.1"}, read())

	good := []struct {
		in   string
		want []string
	}{
		{"Auth.Trackunit.COM", []string{"auth.trackunit.com"}},
		{"auth.trackunit.com:443, 127.0.0.1", []string{"auth.trackunit.com:443", "127.0.0.1"}},
		{"::1,[::1]:8200,[0:0::1]", []string{"::1", "[::1]:8200"}},
		{"localhost:8200,localhost:8200", []string{"localhost:8200"}},
	}
	for _, c := range good {
		env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{"allowed_hosts": c.in})
		require.Equal(t, c.want, read(), c.in)
	}

	before := read()
	bad := []struct{ in, want string }{
		{"https://auth.trackunit.com", `allowed_hosts entry 1 "https://auth.trackunit.com" must be a host or host:port, without scheme or path`},
		{"auth.trackunit.com/token", "without scheme or path"},
		{"user:hunter2@auth.trackunit.com", "allowed_hosts entry 1 has user info"},
		{"auth.trackunit.com,host:0", `allowed_hosts entry 2 "host:0" has a port that is not a number from 1 to 65535`},
		{"host:http", "has a port that is not a number"},
		{"[127.0.0.1]", "is not an IPv6 address"},
		{"bad_host", `"bad_host" is not a host name or IP address`},
		{"-x.example", "is not a host name"},
		{"a b", "without scheme or path"},
		{"", "allowed_hosts must name at least one host"},
		{",", "allowed_hosts entry 1 is empty"},
	}
	for _, c := range bad {
		resp, err := env.request(logical.UpdateOperation, "settings", map[string]interface{}{"allowed_hosts": c.in})
		require.NoError(t, err, c.in)
		require.True(t, resp.IsError(), c.in)
		require.Contains(t, resp.Error().Error(), c.want, c.in)
		require.NotContains(t, resp.Error().Error(), "hunter2")
		require.Equal(t, before, read(), "nothing stored for %q", c.in)
	}
	resp, err := env.request(logical.UpdateOperation, "settings", map[string]interface{}{"allowed_hosts": []string{}})
	require.NoError(t, err)
	require.True(t, resp.IsError())
	require.Contains(t, resp.Error().Error(), "allowed_hosts must name at least one host")
	require.NotContains(t, env.logs.String(), "hunter2")
}

func TestHostAllowedMatchesHostOrHostPort(t *testing.T) {
	t.Parallel()
	allowed := []string{"auth.trackunit.com", "127.0.0.1:8200", "::1", "[fe80::1]:443"}
	for raw, want := range map[string]bool{
		"https://auth.trackunit.com/token":         true,
		"https://AUTH.trackunit.com:8443/token":    true, // a host without port allows any port
		"http://127.0.0.1:8200/token":              true,
		"http://127.0.0.1:8201/token":              false, // host:port allows that port only
		"http://127.0.0.1/token":                   false,
		"http://[::1]:9/token":                     true,
		"https://[fe80::1]/token":                  true, // https's default port
		"https://[fe80::1]:444/token":              false,
		"https://auth.trackunit.com.evil/token":    false,
		"https://evil.example/auth.trackunit.com":  false,
		"https://auth.trackunit.com@evil.example/": false,
		"not a url": false,
	} {
		require.Equal(t, want, hostAllowed(allowed, raw), raw)
	}
}

// An attacker with update on config/<name>, made-up secrets and
// verify=false cannot move token_url or revocation_url to a host the mount
// does not allow: the write is a 400 naming the host and the setting, the
// config stays as it was, and nothing reaches the other host or IRIS.
func TestConfigWriteToHostNotAllowedIsRefused(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
	collector := newCollector(t)
	env.allowOnly("auth.trackunit.com", hostPort(env.iris.URL))
	before := env.mustRequest(logical.ReadOperation, "config/demo", nil).Data
	env.iris.ResetStats()

	for _, field := range []string{"token_url", "revocation_url"} {
		for _, verify := range []bool{true, false} {
			resp, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{
				field: collector.URL + "/collect", "client_secret": "made-up-secret", "password": "made-up-password", "verify": verify,
			})
			require.NoError(t, err)
			require.True(t, resp.IsError(), "%s verify=%v", field, verify)
			require.Equal(t, `API user "demo": `+field+` host "`+hostPort(collector.URL)+`" is not in allowed_hosts; an operator with update on iris/settings can allow it; nothing was stored`,
				resp.Error().Error())
		}
	}
	// A create too, and a host on the default port.
	data := demoConfigData(env)
	data["token_url"] = "https://collector.example/token"
	resp, err := env.request(logical.CreateOperation, "config/other", data)
	require.NoError(t, err)
	require.Contains(t, resp.Error().Error(), `token_url host "collector.example" is not in allowed_hosts`)
	cfg, err := env.b.config(context.Background(), env.storage, "other")
	require.NoError(t, err)
	require.Nil(t, cfg, "nothing stored")

	require.Equal(t, before, env.mustRequest(logical.ReadOperation, "config/demo", nil).Data, "nothing changed")
	require.Zero(t, collector.hits.Load())
	require.Zero(t, env.iris.Stats().Requests)
	require.Zero(t, env.iris.Stats().Revocations)
	env.assertNoSecrets(demoUser)
}

// A create that takes the kind's default token URL passes under the default
// allowed_hosts.
func TestDefaultTokenURLsAreAllowedByDefault(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.allowOnly(defaultAllowedHost)
	for _, kind := range []string{kindAPIUser, kindAPIKey, kindApp} {
		data := map[string]interface{}{"kind": kind, "client_id": "c", "client_secret": "s", "verify": false}
		if kind == kindAPIUser {
			data["username"], data["password"] = "u", "p"
		} else {
			data["scopes"] = "iris.assets.read"
		}
		env.mustRequest(logical.CreateOperation, "config/"+kind, data)
		require.Equal(t, credentialKinds[kind].defaultTokenURL, env.mustRequest(logical.ReadOperation, "config/"+kind, nil).Data["token_url"])
	}
}

// A config whose host the operator has since taken off the list gets a clear
// error on every path that would send something there, and nothing is sent:
// creds/, token/ (when due), renewals, the background refresh, a verifying
// write; revocations are local only, with a log line naming the credential.
func TestNarrowedHostsStopEverySend(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "revocation_url": env.iris.RevocationURL})
	lease := issued(env.readCreds("demo"), env.clock.Now())
	env.readToken("demo")
	env.allowOnly(defaultAllowedHost)
	env.iris.ResetStats()
	want := `API user "demo": token_url host "` + hostPort(env.iris.URL) + `" is not in allowed_hosts, so nothing was sent there: an operator with update on iris/settings can allow it, or update the URL at iris/config/demo`

	resp, err := env.request(logical.ReadOperation, "creds/demo", nil)
	require.Nil(t, resp)
	require.EqualError(t, err, want)
	require.Equal(t, http.StatusBadRequest, err.(logical.HTTPCodedError).Code())

	_, err = env.renew(lease, 0)
	require.ErrorContains(t, err, `token_url host "`+hostPort(env.iris.URL)+`" is not in allowed_hosts`)

	env.clock.Advance(50 * time.Minute)
	env.periodic()
	// Due but still valid: served as in an outage, with the reason.
	resp = env.readToken("demo")
	require.Contains(t, strings.Join(resp.Warnings, " "), "is not in allowed_hosts")
	require.Contains(t, env.logs.String(), "background token refresh failed")

	resp, err = env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": demoUser.Password})
	require.NoError(t, err)
	require.Contains(t, resp.Error().Error(), `token_url host "`+hostPort(env.iris.URL)+`" is not in allowed_hosts`)

	require.NoError(t, env.revoke(lease))
	require.Contains(t, env.logs.String(), `revoked in Vault only: the token's revocation endpoint may not be called: name=demo`)

	require.Zero(t, env.iris.Stats().Requests, "no grant was sent")
	require.Zero(t, env.iris.Stats().Revocations, "no revocation was sent")
	env.assertNoSecrets(demoUser)
}

// A lease's and a session's tokens go back only to the revocation endpoint
// in force when they were issued: an update that moves revocation_url to
// another host does not move them.
func TestTokensAreRevokedOnlyWhereIssued(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "revocation_url": env.iris.RevocationURL})
	lease := issued(env.readCreds("demo"), env.clock.Now())
	env.readToken("demo")
	collector := newCollector(t)
	// The generation stays: the session is kept, issued under the old URL.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{
		"revocation_url": collector.URL + "/revoke", "client_secret": demoUser.ClientSecret, "password": demoUser.Password, "verify": false,
	})
	env.iris.ResetStats()
	require.NoError(t, env.revoke(lease))
	require.Equal(t, 1, env.iris.Stats().Revocations, "the lease is revoked where it was issued")
	env.mustRequest(logical.DeleteOperation, "config/demo", nil)
	require.Equal(t, 2, env.iris.Stats().Revocations, "so is the session's refresh token")
	require.Zero(t, collector.hits.Load())
	env.assertNoSecrets(demoUser)
}

// The issuing host taken off the list: revocation is local only.
func TestRevocationToHostNoLongerAllowedIsLocal(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	other := newCollector(t)
	env.allowOnly(defaultAllowedHost, hostPort(env.iris.URL), hostPort(other.URL))
	env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": other.URL + "/revoke"})
	lease := issued(env.readCreds("demo"), env.clock.Now())
	env.allowOnly(defaultAllowedHost, hostPort(env.iris.URL))
	require.NoError(t, env.revoke(lease))
	require.Zero(t, other.hits.Load())
	require.Contains(t, env.logs.String(), "revoked in Vault only")
}

// A renewal whose lease was issued under another token URL does not send
// its refresh token to the current one; it logs in afresh there.
func TestRenewalSendsRefreshTokenOnlyWhereIssued(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
	lease := issued(env.readCreds("demo"), env.clock.Now())
	// Same generation, other recorded URL: as if the lease had been
	// issued elsewhere.
	lease.InternalData[internalTokenURL] = "https://elsewhere.example/token"
	env.iris.ResetStats()
	renewed, err := env.renew(lease, 0)
	require.NoError(t, err)
	require.Zero(t, env.iris.Stats().RefreshGrants, "the refresh token stays unsent")
	require.Equal(t, 1, env.iris.Stats().PasswordGrants)
	require.Equal(t, env.iris.TokenURL, renewed.Secret.InternalData[internalTokenURL])
	for _, r := range env.iris.Requests() {
		require.Empty(t, r.RefreshToken)
	}
}

// A shared session issued under another token URL does not send its
// refresh token to the current one; the next replacement logs in afresh.
func TestSessionSendsRefreshTokenOnlyWhereIssued(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.readToken("demo")
	sess := env.storedSession("demo")
	require.Equal(t, env.iris.TokenURL, sess.TokenURL, "the session records its endpoint")
	sess.TokenURL = "https://elsewhere.example/token"
	require.NoError(t, env.b.putSession(context.Background(), env.storage, "demo", sess))
	env.iris.ResetStats()
	env.clock.Advance(50 * time.Minute)
	env.readToken("demo")
	require.Zero(t, env.iris.Stats().RefreshGrants, "the refresh token stays unsent")
	require.Equal(t, 1, env.iris.Stats().PasswordGrants)
	require.Equal(t, env.iris.TokenURL, env.storedSession("demo").TokenURL)
}

// The settings are kept in memory and shared by every request: a caller
// changing its copy, or a read response's list, must not widen the host
// check for the sends that follow.
func TestSettingsCopiesAreTheirOwn(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	ctx := context.Background()
	const elsewhere = "https://elsewhere.example/token"
	require.Error(t, env.b.checkHost(ctx, keyTokenURL, elsewhere))

	loaded, err := env.b.loadSettings(ctx, env.storage)
	require.NoError(t, err)
	loaded.AllowedHosts[0] = "elsewhere.example"
	perCredential := false
	loaded.MetricsPerCredential = &perCredential
	require.Error(t, env.b.checkHost(ctx, keyTokenURL, elsewhere), "a loaded copy changed the cached settings")

	hosts := env.mustRequest(logical.ReadOperation, "settings", nil).Data[keyAllowedHosts].([]string)
	hosts[0] = "elsewhere.example"
	require.Error(t, env.b.checkHost(ctx, keyTokenURL, elsewhere), "a read response changed the cached settings")

	// A stored value is copied too: changing it after the write changes
	// nothing.
	written := &mountSettings{MaxBackgroundGrants: 4, AllowedHosts: []string{defaultAllowedHost}, MetricsPerCredential: &perCredential}
	require.NoError(t, env.b.putSettings(ctx, env.storage, written))
	written.AllowedHosts[0] = "elsewhere.example"
	*written.MetricsPerCredential = true
	require.Error(t, env.b.checkHost(ctx, keyTokenURL, elsewhere), "the writer's value changed the cached settings")
	perCredentialNow, err := env.b.metricsPerCredential(ctx, env.storage)
	require.NoError(t, err)
	require.False(t, perCredentialNow)
}

// Once Clean has returned, settings are not written either.
func TestNoSettingsWriteAfterClean(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.b.clean(context.Background())
	_, err := env.request(logical.UpdateOperation, "settings", map[string]interface{}{keyMaxBackgroundGrants: 4})
	require.ErrorIs(t, err, errMountClosed)
	entry, err := env.storage.Get(context.Background(), settingsStorageKey)
	require.NoError(t, err)
	if entry != nil {
		require.NotContains(t, string(entry.Value), `"max_background_grants":4`)
	}
}

// slowSettingsPut holds the first write of settings back until another
// request reads them, or 200 ms have passed: the window in which a second
// settings write could read what the first is replacing.
type slowSettingsPut struct {
	logical.Storage
	once       sync.Once
	putPending chan struct{}
	readDuring chan struct{}
}

func (s *slowSettingsPut) Put(ctx context.Context, e *logical.StorageEntry) error {
	if e.Key == settingsStorageKey {
		s.once.Do(func() {
			close(s.putPending)
			select {
			case <-s.readDuring:
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
	return s.Storage.Put(ctx, e)
}

func (s *slowSettingsPut) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if key == settingsStorageKey {
		select {
		case s.readDuring <- struct{}{}:
		default:
		}
	}
	return s.Storage.Get(ctx, key)
}

// Two operators write settings at once, one narrowing allowed_hosts, the
// other changing max_background_grants: both changes stay.
func TestConcurrentSettingsWritesKeepANarrowing(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	slow := &slowSettingsPut{Storage: env.storage, putPending: make(chan struct{}), readDuring: make(chan struct{})}
	env.storage, env.b.storageView = slow, slow
	env.b.invalidate(context.Background(), settingsStorageKey) // reads go to storage

	narrowed := make(chan error, 1)
	go func() {
		_, err := env.request(logical.UpdateOperation, "settings", map[string]interface{}{keyAllowedHosts: defaultAllowedHost})
		narrowed <- err
	}()
	<-slow.putPending
	env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{keyMaxBackgroundGrants: 4})
	require.NoError(t, <-narrowed)

	data := env.mustRequest(logical.ReadOperation, "settings", nil).Data
	require.Equal(t, []string{defaultAllowedHost}, data[keyAllowedHosts], "the narrowing was lost")
	require.Equal(t, 4, data[keyMaxBackgroundGrants])
	env.iris.ResetStats()
	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	require.Zero(t, env.iris.Stats().Requests, "a grant reached a host no longer allowed")
}

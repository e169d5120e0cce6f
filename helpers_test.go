package iris

// The shared test environment of the root package: a backend wired to the
// strict IRIS emulator with an injected clock, and the request helpers every
// path's tests use.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/irisauth"
	"vault-plugin-secrets-iris/iristest"
)

// The demo user's secrets are distinctive so that the leak checks can search
// every response for them; the client secret has '+' and '%' to pin the raw
// Basic header.
var demoUser = iristest.User{
	ClientID:     "0oa-demo-client",
	ClientSecret: "s3cret+client%2Fsecret",
	Username:     "demo-api-user",
	Password:     "pa55word-never-shown",
}

// testMount is where Vault would have mounted the engine; the router puts it
// in every request.
const testMount = "iris/"

// newTestClock is the injected clock: tests advance it instead of sleeping.
// Vault's own TTL arithmetic (framework.CalculateTTL) reads the real clock,
// so the fake one starts there.
func newTestClock() *iristest.Clock { return iristest.NewClock(time.Now().Truncate(time.Second)) }

// testEnv is a backend wired to an emulator, sharing one fake clock.
type testEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	iris    *iristest.Server
	clock   *iristest.Clock
	sysView *logical.StaticSystemView
	sleeps  []time.Duration
	sleepMu sync.Mutex
	// logs gets log lines and errors, shown what callers were shown.
	logs    *syncBuffer
	shown   *syncBuffer
	leakMu  sync.Mutex
	secrets []string // of every config written
}

func newTestEnv(t *testing.T, users ...iristest.User) *testEnv {
	t.Helper()
	if len(users) == 0 {
		users = []iristest.User{demoUser}
	}
	env := &testEnv{t: t, clock: newTestClock(), logs: &syncBuffer{}, shown: &syncBuffer{}}
	env.iris = iristest.NewServer(users...)
	env.iris.SetClock(env.clock.Now)
	t.Cleanup(env.iris.Close)
	env.b, env.storage, env.sysView = env.newBackend()
	return env
}

// newBackend builds another backend (another mount) on the same emulator
// and clock, with its own storage.
func (env *testEnv) newBackend() (*backend, logical.Storage, *logical.StaticSystemView) {
	env.t.Helper()
	b, storage, sysView := env.newUpgradedBackend(&logical.InmemStorage{})
	// As an operator would for a local emulator: loopback on any port,
	// besides Trackunit's own host.
	resp, err := env.requestOn(b, storage, logical.UpdateOperation, "settings", map[string]interface{}{
		"allowed_hosts": testAllowedHosts,
	})
	require.NoError(env.t, err)
	require.Nil(env.t, resp)
	return b, storage, sysView
}

// testAllowedHosts is what the unit tests' mounts allow.
const testAllowedHosts = defaultAllowedHost + ",127.0.0.1"

// newUpgradedBackend starts a backend on storage as Vault starts a mount
// (Setup, then Initialize), with no settings written: what a mount whose
// storage an earlier release wrote sees.
func (env *testEnv) newUpgradedBackend(storage logical.Storage) (*backend, logical.Storage, *logical.StaticSystemView) {
	env.t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: env.logs})
	client := newIRISClient(logger)
	client.Retry = irisauth.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Second, MaxDelay: 4 * time.Second, Budget: 30 * time.Second}
	client.Sleep = func(ctx context.Context, d time.Duration) error {
		env.sleepMu.Lock()
		env.sleeps = append(env.sleeps, d)
		env.sleepMu.Unlock()
		return ctx.Err()
	}
	b := newBackend(backendOptions{client: client, now: env.clock.Now})
	conf := logical.TestBackendConfig()
	conf.Logger = logger
	sysView := &logical.StaticSystemView{
		DefaultLeaseTTLVal: 24 * time.Hour,
		MaxLeaseTTLVal:     32 * 24 * time.Hour,
	}
	portable := &portableSystemView{StaticSystemView: sysView}
	conf.System = portable
	conf.StorageView = storage
	require.NoError(env.t, b.Setup(context.Background(), conf))
	require.NoError(env.t, b.Initialize(context.Background(), &logical.InitializationRequest{Storage: storage}))
	env.t.Cleanup(func() {
		// As Vault does when it unmounts: background grants stop.
		b.Cleanup(context.Background())
		b.refresher.wait()
		portable.checkPortable(env.t)
	})
	return b, storage, sysView
}

// request runs one request through the framework, as Vault would.
func (env *testEnv) request(op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	return env.requestOn(env.b, env.storage, op, path, data)
}

func (env *testEnv) requestOn(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	if strings.HasPrefix(path, "config/") {
		env.recordWrittenSecrets(data)
	}
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: s, MountPoint: testMount}
	resp, err := b.HandleRequest(context.Background(), req)
	env.recordForLeakCheck(resp, err)
	return resp, err
}

// mustRequest fails the test unless the request succeeded.
func (env *testEnv) mustRequest(op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	env.t.Helper()
	resp, err := env.request(op, path, data)
	require.NoError(env.t, err)
	if resp != nil {
		require.False(env.t, resp.IsError(), "unexpected error response: %v", resp.Error())
	}
	return resp
}

// writeConfig creates config/<name> for user against the emulator.
func (env *testEnv) writeConfig(name string, user iristest.User, extra map[string]interface{}) {
	env.t.Helper()
	data := map[string]interface{}{
		"client_id":     user.ClientID,
		"client_secret": user.ClientSecret,
		"username":      user.Username,
		"password":      user.Password,
		"token_url":     env.iris.TokenURL,
	}
	for k, v := range extra {
		data[k] = v
	}
	env.mustRequest(logical.CreateOperation, "config/"+name, data)
}

// recordWrittenSecrets remembers the secrets a config write carries, so
// that assertNoSecrets forbids them whoever they belong to.
func (env *testEnv) recordWrittenSecrets(data map[string]interface{}) {
	env.leakMu.Lock()
	defer env.leakMu.Unlock()
	for _, key := range writeOnlyFields {
		if v, ok := data[key].(string); ok && v != "" {
			env.secrets = append(env.secrets, v)
		}
	}
}

// recordForLeakCheck remembers every response and error so that
// assertNoSecrets covers all of them.
func (env *testEnv) recordForLeakCheck(resp *logical.Response, err error) {
	if err != nil {
		// Errors go with the log lines: not even an access token may
		// appear in them.
		env.logs.WriteString("\n[error] " + err.Error())
	}
	if resp == nil {
		return
	}
	// What Vault shows a caller; the lease's internal data stays in Vault.
	j, _ := json.Marshal(map[string]interface{}{"data": resp.Data, "warnings": resp.Warnings})
	env.shown.WriteString("\n" + string(j))
}

// assertNoSecrets checks every log line, error and response so far: none
// may hold a stored secret (the user's password and client secret, and
// those of every config written) or a refresh token the emulator issued;
// log lines and errors may not hold any access token it issued either
// (responses of creds/ and token/ return them on purpose).
func (env *testEnv) assertNoSecrets(users ...iristest.User) {
	env.t.Helper()
	require.Empty(env.t, env.leaks(users...), "secrets leaked")
}

// leaks names what assertNoSecrets forbids and found, never the secret
// itself.
func (env *testEnv) leaks(users ...iristest.User) []string {
	logs, shown := env.logs.String(), env.shown.String()
	var found []string
	check := func(what, secret string, inShown bool) {
		if secret == "" {
			return
		}
		if strings.Contains(logs, secret) {
			found = append(found, what+" in a log line or error")
		}
		if inShown && strings.Contains(shown, secret) {
			found = append(found, what+" in a response")
		}
	}
	for _, u := range users {
		check("the password of "+u.Username, u.Password, true)
		check("the client secret of "+u.ClientID, u.ClientSecret, true)
	}
	for i, secret := range env.writtenSecrets() {
		check(fmt.Sprintf("secret #%d written to a config", i), secret, true)
	}
	for i, is := range env.iris.Issued() {
		check(fmt.Sprintf("refresh token #%d", i), is.RefreshToken, true)
		check(fmt.Sprintf("access token #%d", i), is.AccessToken, false)
	}
	for _, r := range env.iris.Requests() {
		check("a refresh token sent to IRIS", r.RefreshToken, true)
	}
	return found
}

// writtenSecrets are the secrets of every config write so far.
func (env *testEnv) writtenSecrets() []string {
	env.leakMu.Lock()
	defer env.leakMu.Unlock()
	return append([]string(nil), env.secrets...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) WriteString(p string) {
	s.mu.Lock()
	s.b.WriteString(p)
	s.mu.Unlock()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readCreds reads creds/<name> and returns the response.
func (env *testEnv) readCreds(name string) *logical.Response {
	env.t.Helper()
	resp := env.mustRequest(logical.ReadOperation, "creds/"+name, nil)
	require.NotNil(env.t, resp)
	require.NotNil(env.t, resp.Secret)
	return resp
}

// renew renews the lease of resp as Vault's expiration manager would, and
// returns what Vault would store (the handler's response).
func (env *testEnv) renew(lease *logical.Secret, increment time.Duration) (*logical.Response, error) {
	secret := *lease
	secret.Increment = increment
	req := &logical.Request{Operation: logical.RenewOperation, Path: "creds/x", Secret: &secret, Storage: env.storage, MountPoint: testMount}
	resp, err := env.b.HandleRequest(context.Background(), req)
	env.recordForLeakCheck(resp, err)
	return resp, err
}

func (env *testEnv) revoke(lease *logical.Secret) error {
	req := &logical.Request{Operation: logical.RevokeOperation, Path: "creds/x", Secret: lease, Storage: env.storage, MountPoint: testMount}
	resp, err := env.b.HandleRequest(context.Background(), req)
	env.recordForLeakCheck(resp, err)
	if err == nil && resp != nil && resp.IsError() {
		return resp.Error()
	}
	return err
}

// issued stamps the lease as Vault does when it stores it.
func issued(resp *logical.Response, at time.Time) *logical.Secret {
	s := *resp.Secret
	s.IssueTime = at
	s.LeaseID = "iris/creds/demo/abc"
	return &s
}

func keys(m map[string]interface{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// rotatePassword does what an admin does in Trackunit Manager: a new
// password, and every session of the old one ended.
func rotatePassword(env *testEnv) {
	rotated := demoUser
	rotated.Password = "rotated-by-admin"
	env.iris.AddUser(rotated)
	env.iris.RevokeAll(demoUser.Username)
}

func (env *testEnv) readToken(name string) *logical.Response {
	env.t.Helper()
	resp := env.mustRequest(logical.ReadOperation, "token/"+name, nil)
	require.NotNil(env.t, resp)
	require.Nil(env.t, resp.Secret, "token/ creates no lease")
	return resp
}

func (env *testEnv) storedSession(name string) *tokenSession {
	env.t.Helper()
	sess, err := env.b.sessionFromStorage(context.Background(), env.storage, name)
	require.NoError(env.t, err)
	return sess
}

func (env *testEnv) periodic() {
	env.t.Helper()
	require.NoError(env.t, env.b.periodic(context.Background(), &logical.Request{Storage: env.storage, MountPoint: testMount}))
	// The pass only queues what is due; its grants run in the mount's pool.
	env.b.refresher.wait()
}

func demoConfigData(env *testEnv) map[string]interface{} {
	return map[string]interface{}{
		"client_id":     demoUser.ClientID,
		"client_secret": demoUser.ClientSecret,
		"username":      demoUser.Username,
		"password":      demoUser.Password,
		"token_url":     env.iris.TokenURL,
	}
}

// The leak check fails on each kind of secret, wherever it is planted: a
// check that passes everything would make every test that relies on it
// vacuous.
func TestLeakCheckSeesEverything(t *testing.T) {
	t.Parallel()
	other := map[string]interface{}{"client_secret": "other-config-client-secret", "password": "other-config-password", "verify": false}
	secrets := []struct {
		name string
		get  func(env *testEnv) string
		// inResponse: responses may carry it (creds/ and token/ return
		// access tokens on purpose).
		inResponse bool
	}{
		{"issued access token", func(env *testEnv) string { return env.iris.Issued()[0].AccessToken }, true},
		{"issued refresh token", func(env *testEnv) string { return env.iris.Issued()[0].RefreshToken }, false},
		{"password of the user", func(*testEnv) string { return demoUser.Password }, false},
		{"client secret of the user", func(*testEnv) string { return demoUser.ClientSecret }, false},
		{"password of another config", func(*testEnv) string { return other["password"].(string) }, false},
		{"client secret of another config", func(*testEnv) string { return other["client_secret"].(string) }, false},
	}
	plants := []struct {
		name  string
		plant func(env *testEnv, secret string)
	}{
		{"log line", func(env *testEnv, secret string) { env.b.Logger().Info("something", "value", secret) }},
		{"error", func(env *testEnv, secret string) { env.recordForLeakCheck(nil, errors.New("failed: "+secret)) }},
		{"response", func(env *testEnv, secret string) {
			env.recordForLeakCheck(&logical.Response{Data: map[string]interface{}{"field": secret}}, nil)
		}},
	}
	for _, s := range secrets {
		for _, p := range plants {
			t.Run(s.name+" in a "+p.name, func(t *testing.T) {
				env := newTestEnv(t)
				// The refresh token is never sent back to IRIS: the check
				// must know it from what the emulator issued.
				env.writeConfig("demo", demoUser, nil)
				env.writeConfig("other", demoUser, other)
				require.Empty(t, env.leaks(demoUser), "clean before planting")
				p.plant(env, s.get(env))
				if s.inResponse && p.name == "response" {
					require.Empty(t, env.leaks(demoUser))
					return
				}
				require.NotEmpty(t, env.leaks(demoUser))
			})
		}
	}
}

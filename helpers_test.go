package iris

// The shared test environment of the root package: a backend wired to the
// strict IRIS emulator with an injected clock, and the request helpers every
// path's tests use.

import (
	"context"
	"encoding/json"
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
	logs         *syncBuffer
	shown        *syncBuffer
	leakMu       sync.Mutex
	accessTokens []string
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
	storage := &logical.InmemStorage{}
	conf.StorageView = storage
	require.NoError(env.t, b.Setup(context.Background(), conf))
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
	if token, ok := resp.Data["access_token"].(string); ok {
		env.leakMu.Lock()
		env.accessTokens = append(env.accessTokens, token)
		env.leakMu.Unlock()
	}
	// What Vault shows a caller; the lease's internal data stays in Vault.
	j, _ := json.Marshal(map[string]interface{}{"data": resp.Data, "warnings": resp.Warnings})
	env.shown.WriteString("\n" + string(j))
}

// assertNoSecrets checks every log line, error and response so far: none
// may hold the user's password or client secret, or a refresh token the
// emulator issued; log lines and errors may not hold access tokens either
// (responses of creds/ and token/ return them on purpose).
func (env *testEnv) assertNoSecrets(user iristest.User) {
	env.t.Helper()
	logs, shown := env.logs.String(), env.shown.String()
	forbidden := []string{user.Password, user.ClientSecret}
	for _, r := range env.iris.Requests() {
		if r.RefreshToken != "" {
			forbidden = append(forbidden, r.RefreshToken)
		}
	}
	for _, secret := range forbidden {
		require.NotContains(env.t, logs, secret)
		require.NotContains(env.t, shown, secret)
	}
	env.leakMu.Lock()
	defer env.leakMu.Unlock()
	for _, token := range env.accessTokens {
		require.NotContains(env.t, logs, token)
	}
}

func (env *testEnv) sleepsSoFar() []time.Duration {
	env.sleepMu.Lock()
	defer env.sleepMu.Unlock()
	return append([]time.Duration(nil), env.sleeps...)
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
	sess, err := env.b.sessions.loadUncached(context.Background(), env.storage, name)
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

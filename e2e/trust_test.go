//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// TestTrust checks the trust promises through a real Vault: the stored
// secrets go only where they went before unless the write that moves them
// carries them; a lease renews and revokes only as the credential that issued
// it; a refresh token whose answer was lost is never sent again; unmounting
// does not wait on a revocation endpoint that never answers; status/ shows
// health and no secret. Each subtest has an emulator and config names of its
// own; the leak and race checks run once the server has stopped.
// TestCredentialHold, which runs against the clock, has a server of its own.
func TestTrust(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	t.Run("EndpointChangeNeedsTheSecrets", func(t *testing.T) { testEndpointChangeNeedsTheSecrets(t, v) })
	t.Run("HostsNotAllowed", func(t *testing.T) { testHostsNotAllowed(t, v) })
	t.Run("RecreatedConfigStrandsOldLeases", func(t *testing.T) { testRecreatedConfigStrandsOldLeases(t, v) })
	t.Run("LostRefreshAnswers", func(t *testing.T) { testLostRefreshAnswers(t, v) })
	t.Run("Status", func(t *testing.T) { testStatus(t, v) })
	t.Run("UnmountWithHangingRevocation", func(t *testing.T) { testUnmountWithHangingRevocation(t, v) })
}

// witness is a loopback server that must never be called: it counts every
// request and answers none of them usefully.
type witness struct {
	*httptest.Server
	hits atomic.Int64
}

func newWitness(t testing.TB) *witness {
	w := &witness{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		w.hits.Add(1)
		http.Error(rw, "this server must never be called", http.StatusTeapot)
	}))
	t.Cleanup(w.Close)
	return w
}

// newWitnessAt is a witness listening on another loopback address, such as
// 127.0.0.2, which the mounts' allowed_hosts does not name.
func newWitnessAt(t testing.TB, addr string) *witness {
	w := &witness{}
	w.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		w.hits.Add(1)
		http.Error(rw, "this server must never be called", http.StatusTeapot)
	}))
	l, err := net.Listen("tcp", addr+":0")
	require.NoError(t, err)
	w.Listener.Close()
	w.Listener = l
	w.Start()
	t.Cleanup(w.Close)
	return w
}

// testHostsNotAllowed: a principal with only update on config/<name>, with
// made-up secrets, verify on or off, cannot move token_url or
// revocation_url to a host outside allowed_hosts; a lease issued before the
// attempts, revoked after them, sends nothing there; a token with the
// README's rotator policy cannot change token_url even to an allowed host.
func testHostsNotAllowed(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "hosts"
	v.writeConfig(t, name, em, "revocation_url="+em.RevocationURL)
	lease := v.readCreds(t, name)
	before := v.readConfig(t, name)
	w := newWitnessAt(t, "127.0.0.2")
	host := strings.TrimPrefix(w.URL, "http://")

	policy := filepath.Join(v.dir, "iris-update-hosts.hcl")
	require.NoError(t, os.WriteFile(policy, []byte(`path "`+mountPath+`/config/`+name+`" { capabilities = ["update"] }`), 0o600))
	v.mustCLI(t, "policy", "write", "iris-update-hosts", policy)
	updater := v.tokenWithPolicies(t, false, "iris-update-hosts")
	requests := em.Stats().Requests

	for _, field := range []string{"token_url", "revocation_url"} {
		for _, verify := range []string{"true", "false"} {
			res := v.cliWithToken(t, updater, "write", mountPath+"/config/"+name, field+"="+w.URL+"/collect",
				"client_secret=made-up-secret", "password=made-up-password", "verify="+verify)
			require.NotZero(t, res.ExitCode, "%s", res)
			assert.Contains(t, res.Stderr, "Code: 400", "%s", res)
			assert.Contains(t, res.Stderr, field+` host "`+host+`" is not in allowed_hosts`, "%s", res)
		}
	}
	assert.Equal(t, before, v.readConfig(t, name), "nothing changed")
	assert.Equal(t, requests, em.Stats().Requests, "a refused write called IRIS")

	revocations := em.Stats().Revocations
	v.mustCLI(t, "lease", "revoke", lease.LeaseID)
	v.waitLeaseGone(t, lease.LeaseID)
	assert.Equal(t, revocations+1, em.Stats().Revocations, "the lease is revoked where it was issued")

	v.writeDocPolicy(t, policyRotator)
	rotator := v.tokenWithPolicies(t, false, policyRotator)
	res := v.cliWithToken(t, rotator, "write", mountPath+"/config/"+name, "token_url="+em.TokenURL+"/elsewhere",
		"client_secret="+em.User.ClientSecret, "password="+em.User.Password)
	require.NotZero(t, res.ExitCode, "%s", res)
	assert.Contains(t, res.Stderr, "permission denied", "%s", res)
	assert.Equal(t, before, v.readConfig(t, name))
	assert.Zero(t, w.hits.Load(), "the host outside allowed_hosts was called")
}

// testEndpointChangeNeedsTheSecrets: an update that moves token_url or
// revocation_url without carrying client_secret and password is refused
// with a 400 naming them, changes nothing and sends nothing to the new
// address; with them it is accepted.
func testEndpointChangeNeedsTheSecrets(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "endpoint"
	v.writeConfig(t, name, em, "revocation_url="+em.RevocationURL)
	before := v.readConfig(t, name)
	w := newWitness(t)
	requests := em.Stats().Requests

	for _, change := range []string{"token_url=" + w.URL + "/token", "revocation_url=" + w.URL + "/revoke"} {
		for _, carried := range [][]string{nil, {"client_secret=" + em.User.ClientSecret}, {"password=" + em.User.Password}} {
			args := append([]string{"write", mountPath + "/config/" + name, change}, carried...)
			res := v.cliFails(t, args...)
			assert.Contains(t, res.Stderr, "Code: 400", "%s", res)
			assert.Contains(t, res.Stderr, "nothing was changed", "%s", res)
			for _, secret := range []string{"client_secret", "password"} {
				isCarried := len(carried) > 0 && strings.HasPrefix(carried[0], secret+"=")
				if isCarried {
					assert.NotContains(t, res.Stderr, secret+" missing", "%s", res)
				} else {
					assert.Contains(t, res.Stderr, secret, "the refusal does not name the missing %s: %s", secret, res)
				}
			}
		}
		// verify=false does not lift the rule.
		res := v.cliFails(t, "write", mountPath+"/config/"+name, change, "verify=false")
		assert.Contains(t, res.Stderr, "Code: 400", "%s", res)
	}
	assert.Equal(t, before, v.readConfig(t, name), "a refused write changed the config")
	assert.Zero(t, w.hits.Load(), "the stored secrets were sent to the new address")
	assert.Equal(t, requests, em.Stats().Requests, "a refused write called IRIS")

	// Still served from the old address.
	lt := v.readCreds(t, name)
	assert.Equal(t, em.User.ClientID, em.issuedFor(t, lt.Data.AccessToken).ClientID)
	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	v.waitLeaseGone(t, lt.LeaseID)
	assert.Zero(t, w.hits.Load())

	// With the secrets, a move to another IRIS that knows the API user is
	// accepted and verified there.
	other := newEmulator(t, v.rec, time.Hour, sameUser(em.User))
	v.mustCLI(t, "write", mountPath+"/config/"+name, "token_url="+other.TokenURL, "revocation_url="+other.RevocationURL,
		"client_secret="+em.User.ClientSecret, "password="+em.User.Password)
	after := v.readConfig(t, name)
	assert.Equal(t, other.TokenURL, after.TokenURL)
	assert.Equal(t, other.RevocationURL, after.RevocationURL)
	assert.Equal(t, 1, other.Stats().PasswordGrants, "the accepted write was not verified at the new token URL")
	lt = v.readCreds(t, name)
	_, ok := other.IssuanceOf(lt.Data.AccessToken)
	assert.True(t, ok, "creds/ was not served from the new token URL")
	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	v.waitLeaseGone(t, lt.LeaseID)
	assert.Zero(t, w.hits.Load())
}

// testRecreatedConfigStrandsOldLeases: after a delete and re-create under
// the same name, an old lease neither renews (400, "read … again") nor
// revokes at IRIS with the new API user's credentials, and neither sends
// anything; the new API user's leases work.
func testRecreatedConfigStrandsOldLeases(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "recreate"
	extra := []string{"renewable_leases=true", "revocation_url=" + em.RevocationURL}
	v.writeConfig(t, name, em, extra...)
	old := v.readCreds(t, name)
	require.True(t, old.Renewable)
	oldRefresh := em.issuedFor(t, old.Data.AccessToken).RefreshToken
	require.NotEmpty(t, oldRefresh)

	v.mustCLI(t, "delete", mountPath+"/config/"+name)
	v.writeConfig(t, name, em, extra...)
	before := em.Stats()

	res := v.cliFails(t, "lease", "renew", old.LeaseID)
	assert.Contains(t, res.Stderr, "Code: 400", "%s", res)
	assert.Contains(t, res.Stderr, "no longer exists at "+mountPath+"/config/"+name, "%s", res)
	assert.Contains(t, res.Stderr, "read "+mountPath+"/creds/"+name+" again", "%s", res)
	assert.Equal(t, before, em.Stats(), "renewing a lease of the replaced API user reached IRIS")

	v.mustCLI(t, "lease", "revoke", old.LeaseID)
	v.waitLeaseGone(t, old.LeaseID)
	assert.Equal(t, before, em.Stats(), "revoking a lease of the replaced API user reached IRIS")
	for _, r := range em.Requests() {
		assert.NotEqual(t, oldRefresh, r.RefreshToken, "the old lease's refresh token was sent")
	}

	// The re-created API user's own leases renew.
	fresh := v.readCreds(t, name)
	r := v.renewLease(t, fresh.LeaseID)
	assert.NotEqual(t, fresh.Data.AccessToken, r.Data.AccessToken)
	assert.Equal(t, "refresh_token", em.issuedFor(t, r.Data.AccessToken).GrantType)
	v.mustCLI(t, "lease", "revoke", fresh.LeaseID)
	v.waitLeaseGone(t, fresh.LeaseID)
	assert.Zero(t, em.Stats().RefreshReuse)
}

// testLostRefreshAnswers: IRIS carries out a refresh and the answer is lost,
// as a 500 sent after the fact or a dropped connection. The token/ read and
// the lease renewal that lost it answer with a token from the password
// grant in the same request, and the refresh token is never sent again.
func testLostRefreshAnswers(t *testing.T, v *vaultServer) {
	t.Run("TokenRead", func(t *testing.T) {
		// Tokens live 6 s and the session is due at half-life, 3 s after
		// each grant: the moment Vault's periodic refresh would take it
		// too, so that the reads, polling, are almost always first.
		em := newEmulator(t, v.rec, 6*time.Second)
		const name = "lost-token"
		v.writeConfig(t, name, em, "request_timeout=2", "refresh_floor=3")
		seed := em.Issued()[0]
		require.NotEmpty(t, seed.RefreshToken)
		n := len(em.Requests())
		em.FailNext(1, iristest.Fault{Status: http.StatusInternalServerError, AfterHandling: true})

		var final timedRead
		var readStart time.Time
		reads := 0
		eventually(t, 30*time.Second, "token/ to replace its token past a lost refresh answer", func() (bool, string) {
			readStart = time.Now()
			final = v.timedRead(mountPath + "/token/" + name)
			reads++
			require.NoError(t, final.err)
			require.Equal(t, http.StatusOK, final.res.Status, "a read failed on a lost refresh answer: %s", final.res.Raw)
			return final.accessToken() != seed.AccessToken, "still serving the seed"
		})
		assert.Empty(t, final.warnings())
		got := em.issuedFor(t, final.accessToken())
		assert.Equal(t, "password", got.GrantType, "the read did not log in after losing the refresh answer")
		assert.NotEmpty(t, got.RefreshToken, "token/ logged in without offline_access")
		checkLostRefresh(t, em, n, seed.RefreshToken, http.StatusInternalServerError)
		// The read itself lost the answer and logged in, not Vault's
		// periodic refresh before it.
		for _, r := range em.Requests()[n:] {
			assert.False(t, r.Time.Before(readStart), "a %s grant came before the read that answered with its token", r.GrantType)
		}
		t.Logf("the read that lost the answer took %s (%d reads)", final.elapsed.Round(time.Millisecond), reads)

		// The session carries on with the password grant's refresh token.
		n = len(em.Requests())
		eventually(t, 30*time.Second, "token/ to refresh again", func() (bool, string) {
			r := v.timedRead(mountPath + "/token/" + name)
			require.Equal(t, http.StatusOK, r.res.Status, r.res.Raw)
			return r.accessToken() != final.accessToken(), "still serving the password grant's token"
		})
		refreshes := em.refreshRequests()
		require.NotEmpty(t, refreshes)
		assert.Equal(t, got.RefreshToken, em.Requests()[n].RefreshToken, "the session did not carry on with its new refresh token")
		st := em.Stats()
		assert.Zero(t, st.RefreshReuse)
		assert.Zero(t, st.Rejected)
	})

	t.Run("LeaseRenewal", func(t *testing.T) {
		em := newEmulator(t, v.rec, 600*time.Second)
		const name = "lost-renewal"
		v.writeConfig(t, name, em, "renewable_leases=true", "request_timeout=2")
		lt := v.readCreds(t, name)
		leaseRefresh := em.issuedFor(t, lt.Data.AccessToken).RefreshToken
		require.NotEmpty(t, leaseRefresh)
		n := len(em.Requests())
		em.FailNext(1, iristest.Fault{AfterHandling: true, DropConnection: true})

		r := v.renewLease(t, lt.LeaseID)
		require.NotEmpty(t, r.Data.AccessToken, "the renewal that lost its refresh answer printed no token")
		got := em.issuedFor(t, r.Data.AccessToken)
		assert.Equal(t, "password", got.GrantType, "the renewal did not log in after losing the refresh answer")
		assert.Equal(t, "api offline_access", got.Scope)
		require.NotEmpty(t, got.RefreshToken)
		checkLostRefresh(t, em, n, leaseRefresh, 0)

		// The next renewal uses the password grant's refresh token.
		n = len(em.Requests())
		r2 := v.renewLease(t, lt.LeaseID)
		assert.Equal(t, "refresh_token", em.issuedFor(t, r2.Data.AccessToken).GrantType)
		refreshes := em.Requests()[n:]
		require.Len(t, refreshes, 1)
		assert.Equal(t, got.RefreshToken, refreshes[0].RefreshToken)
		sent := 0
		for _, req := range em.Requests() {
			if req.RefreshToken == leaseRefresh {
				sent++
			}
		}
		assert.Equal(t, 1, sent, "the lease's first refresh token was sent more than once")
		st := em.Stats()
		assert.Zero(t, st.RefreshReuse)
		assert.Zero(t, st.Rejected)
		v.mustCLI(t, "lease", "revoke", lt.LeaseID)
		v.waitLeaseGone(t, lt.LeaseID)
	})
}

// checkLostRefresh asserts what IRIS saw from request n on: one refresh
// grant, carrying sent, carried out (its tokens issued) but never answered
// with them; then one password grant; and no reuse.
func checkLostRefresh(t *testing.T, em *emulator, n int, sent string, status int) {
	t.Helper()
	var refreshes, logins []iristest.Request
	for _, r := range em.Requests()[n:] {
		switch r.GrantType {
		case "refresh_token":
			refreshes = append(refreshes, r)
		case "password":
			logins = append(logins, r)
		}
	}
	if assert.Len(t, refreshes, 1, "the refresh token whose answer was lost was sent again") {
		assert.Equal(t, sent, refreshes[0].RefreshToken)
		assert.Equal(t, status, refreshes[0].Status)
	}
	assert.Len(t, logins, 1, "one password grant replaces the lost answer")
	lost := 0
	for _, is := range em.Issued() {
		if is.GrantType == "refresh_token" && !is.Answered {
			lost++
			for _, r := range em.Requests() {
				assert.NotEqual(t, is.RefreshToken, r.RefreshToken, "a refresh token the plugin never saw was sent")
			}
		}
	}
	assert.Equal(t, 1, lost, "the fault did not lose a refresh answer IRIS had carried out")
	st := em.Stats()
	assert.Zero(t, st.RefreshReuse, "a refresh token was sent twice")
	assert.Zero(t, st.Rejected)
}

// statusData is what status/<name> returns.
type statusData struct {
	Kind                string `json:"kind"`
	TokenHeld           bool   `json:"token_held"`
	TokenObtainedAt     string `json:"token_obtained_at"`
	TokenExpiresAt      string `json:"token_expires_at"`
	TokenReplacedAt     string `json:"token_replaced_at"`
	RefreshTokenHeld    bool   `json:"refresh_token_held"`
	LastSuccessAt       string `json:"last_success_at"`
	LastSuccessGrant    string `json:"last_success_grant"`
	LastFailureAt       string `json:"last_failure_at"`
	LastFailure         string `json:"last_failure"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	GrantsHeldUntil     string `json:"grants_held_until"`
	GrantsHeldBecause   string `json:"grants_held_because"`
	GrantsLastHour      int    `json:"grants_last_hour"`
}

// readStatus reads status/<name> with the CLI and returns its raw output
// and its data.
func (v *vaultServer) readStatus(t testing.TB, token, name string) (string, statusData) {
	t.Helper()
	res := v.cliWithToken(t, token, "read", "-format=json", mountPath+"/status/"+name)
	require.Zero(t, res.ExitCode, "%s", res)
	var out struct {
		Data statusData `json:"data"`
	}
	require.NoError(t, jsonUnmarshal(res.Stdout, &out), res.Stdout)
	return res.Stdout, out.Data
}

// assertNoTokenIn fails if text holds any token em issued or any of its
// user's secrets.
func assertNoTokenIn(t testing.TB, em *emulator, text, what string) {
	t.Helper()
	for _, is := range em.Issued() {
		for _, tok := range []string{is.AccessToken, is.RefreshToken} {
			if tok != "" && strings.Contains(text, tok) {
				t.Errorf("%s holds a token the emulator issued (%s grant)", what, is.GrantType)
			}
		}
	}
	for _, s := range secretForms(em.User.Password) {
		assert.NotContains(t, text, s, "%s holds the password", what)
	}
	for _, s := range secretForms(em.User.ClientSecret) {
		assert.NotContains(t, text, s, "%s holds the client secret", what)
	}
}

// testStatus: status/ shows an API user's health and no secret, and a policy
// with read on status/* alone reads it but no token.
func testStatus(t *testing.T, v *vaultServer) {
	em := newEmulator(t, v.rec, time.Hour)
	const name = "status"
	v.writeConfig(t, name, em, "renewable_leases=true")
	res, tr := v.readToken(t, name)
	require.Equal(t, http.StatusOK, res.Status, res.Raw)
	lt := v.readCreds(t, name)

	raw, st := v.readStatus(t, v.rootToken(), name)
	assertNoTokenIn(t, em, raw, "status/")
	assert.NotContains(t, raw, tr.accessToken())
	assert.NotContains(t, raw, lt.Data.AccessToken)
	assert.Equal(t, "api_user", st.Kind)
	assert.True(t, st.TokenHeld)
	assert.True(t, st.RefreshTokenHeld)
	for _, ts := range []string{st.TokenObtainedAt, st.TokenExpiresAt, st.TokenReplacedAt, st.LastSuccessAt} {
		_, err := time.Parse(time.RFC3339, ts)
		assert.NoError(t, err, "status/ time %q", ts)
	}
	assert.Equal(t, "password", st.LastSuccessGrant)
	assert.Empty(t, st.LastFailureAt)
	assert.Empty(t, st.LastFailure)
	assert.Zero(t, st.ConsecutiveFailures)
	assert.Empty(t, st.GrantsHeldUntil)
	// The creds/ read's grant; the config write's verification is not held
	// back or counted.
	assert.GreaterOrEqual(t, st.GrantsLastHour, 1)
	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	v.waitLeaseGone(t, lt.LeaseID)

	// A failure shows, sanitised like the errors.
	em.SetFault(&iristest.Fault{Status: http.StatusBadRequest, ContentType: "application/json",
		Body: `{"error":"invalid_grant","error_description":"` + em.User.Password + `"}`})
	failed := v.raw(t, "GET", mountPath+"/creds/"+name, nil)
	em.SetFault(nil)
	assert.Equal(t, http.StatusBadGateway, failed.Status, failed.Raw)
	raw, st = v.readStatus(t, v.rootToken(), name)
	assertNoTokenIn(t, em, raw, "status/ after a failure")
	assert.NotEmpty(t, st.LastFailureAt)
	assert.Contains(t, st.LastFailure, "invalid_grant")
	assert.Equal(t, 1, st.ConsecutiveFailures)
	assert.NotEmpty(t, st.GrantsHeldUntil, "a refusal of the credentials did not hold grants back")
	v.mustCLI(t, "write", mountPath+"/config/"+name, "verify=false", "ttl=600")
	_, st = v.readStatus(t, v.rootToken(), name)
	assert.Empty(t, st.GrantsHeldUntil, "a config write did not end the hold")

	// Monitoring with read on status/* and nothing else.
	policy := filepath.Join(v.dir, "status-only.hcl")
	require.NoError(t, os.WriteFile(policy, []byte(fmt.Sprintf("path %q {\n  capabilities = [\"read\"]\n}\n", mountPath+"/status/*")), 0o600))
	v.mustCLI(t, "policy", "write", "iris-status-only", policy)
	var created struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	v.cliJSON(t, &created, "token", "create", "-format=json", "-policy=iris-status-only", "-no-default-policy", "-ttl=10m")
	monitor := created.Auth.ClientToken
	require.NotEmpty(t, monitor)
	raw, st = v.readStatus(t, monitor, name)
	assertNoTokenIn(t, em, raw, "status/ read by monitoring")
	assert.True(t, st.TokenHeld)
	for _, p := range []string{"token", "creds", "config"} {
		res := v.cliWithToken(t, monitor, "read", mountPath+"/"+p+"/"+name)
		assert.NotZero(t, res.ExitCode, "a status-only token read %s/: %s", p, res)
		assert.Contains(t, res.Stderr, "permission denied", "%s", res)
	}
}

// hangingServer accepts connections and never answers them, until the test
// ends.
type hangingServer struct {
	l     net.Listener
	conns atomic.Int64
	mu    sync.Mutex
	open  []net.Conn
}

func newHangingServer(t testing.TB) *hangingServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &hangingServer{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.conns.Add(1)
			h.mu.Lock()
			h.open = append(h.open, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.open {
			c.Close()
		}
	})
	return h
}

func (h *hangingServer) url() string { return "http://" + h.l.Addr().String() }

// testUnmountWithHangingRevocation: a mount with 1,000 leases whose
// revocation endpoint accepts connections and never answers is disabled
// within a minute. Each lease's revocation would otherwise wait out its
// request_timeout, one after the other.
func testUnmountWithHangingRevocation(t *testing.T, v *vaultServer) {
	const (
		mount  = "iris-unmount"
		leases = 1000
		limit  = 60 * time.Second
	)
	v.enableIRIS(t, mount, pluginVersion)
	em := newEmulator(t, v.rec, time.Hour)
	hang := newHangingServer(t)
	args := configArgs("hang", em, "revocation_url="+hang.url()+"/revoke", "request_timeout=1")
	args[1] = mount + "/config/hang"
	v.mustCLI(t, args...)

	setupStart := time.Now()
	ids := make([]string, leases)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, leases)
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= leases {
					return
				}
				r := v.timedRead(mount + "/creds/hang")
				if r.err != nil || r.res.Status != http.StatusOK {
					errs <- fmt.Sprintf("creds read %d: %v %d %s", i, r.err, r.res.Status, r.res.Raw)
					continue
				}
				ids[i], _ = r.res.Body["lease_id"].(string)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	require.False(t, t.Failed(), "could not issue the leases")
	t.Logf("issued %d leases in %s", leases, time.Since(setupStart).Round(time.Millisecond))
	require.Zero(t, hang.conns.Load(), "the revocation endpoint was called before the unmount")

	start := time.Now()
	res := v.cli(t, "secrets", "disable", mount)
	elapsed := time.Since(start)
	t.Logf("vault secrets disable with %d leases and a hanging revocation endpoint: %s (%d connections to it)",
		leases, elapsed.Round(time.Millisecond), hang.conns.Load())
	require.Zero(t, res.ExitCode, "%s", res)
	assert.Less(t, elapsed, limit, "disabling the mount waited on the hanging revocation endpoint")
	assert.Positive(t, hang.conns.Load(), "the unmount never tried the revocation endpoint, so this test proves nothing")
	for _, id := range []string{ids[0], ids[leases/2], ids[leases-1]} {
		exists, _ := v.leaseExists(t, id)
		assert.False(t, exists, "lease %s survived disabling its mount", id)
	}
}

// TestCredentialHold changes the API user's password in Trackunit Manager
// (the emulator) behind Vault's back, with an Okta-style lockout after 5
// consecutive refusals, and reads creds/ and token/ once a second for over a
// minute: IRIS sees at most 3 refused attempts and the user is not locked;
// reads between attempts fail at once, saying when the next attempt is due;
// token/ keeps serving its still-valid token with a warning. Writing the new
// password ends the hold. It runs against the clock, about 80 s.
//
// The API user is a legacy one, without refresh tokens, so that token/ has
// to log in when its token falls due: a refresh token would still work after
// a password change.
func TestCredentialHold(t *testing.T) {
	t.Parallel()
	const (
		// The token is replaced at half its life (refresh_floor), 70 s
		// after it was obtained, and served through a failure while it has
		// more than the outage floor of 60 s left: from 70 s to 80 s.
		lifetime    = 140 * time.Second
		floor       = 70 * time.Second
		outageFloor = 60 * time.Second
		readFor     = 60 * time.Second
		threshold   = 5
		maxRefused  = 3
	)
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })
	em := newEmulator(t, rec, lifetime, legacyUser)
	em.SetLockoutThreshold(threshold)
	const name = "hold"
	v.writeConfig(t, name, em, fmt.Sprintf("refresh_floor=%d", int(floor/time.Second)))
	seed := em.Issued()[0]
	require.Empty(t, seed.RefreshToken, "a legacy user got a refresh token")
	obtained := seed.IssuedAt

	newPassword := "pw+&%~" + randomHex(20)
	rec.addSecret("new password", newPassword)
	em.SetPassword(em.User.Username, newPassword)

	start := time.Now()
	// Stop before the token gets within a few seconds of the outage floor.
	stop := obtained.Add(lifetime - outageFloor - 3*time.Second)
	require.True(t, stop.Sub(start) > readFor, "setup took too long: %s", time.Since(obtained))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	credsFailed, heldReads, freshReads, warnedReads := 0, 0, 0, 0
	var slowest time.Duration
	for time.Now().Before(stop) {
		<-tick.C
		c := v.timedRead(mountPath + "/creds/" + name)
		require.NoError(t, c.err)
		require.Equal(t, http.StatusBadGateway, c.res.Status, "creds/ with a changed password: %s", c.res.Raw)
		text := c.res.errorsText()
		assert.Contains(t, text, "invalid_grant")
		if strings.Contains(text, "no new attempt until") {
			heldReads++
			slowest = max(slowest, c.elapsed)
		} else {
			// An attempt IRIS refused, which started or doubled a hold.
			t.Logf("creds/ at %s was an attempt: %s", time.Since(start).Round(time.Second), text)
		}
		credsFailed++

		res, tr := v.readToken(t, name)
		require.Equal(t, http.StatusOK, res.Status, "token/ stopped serving a still-valid token: %s", res.Raw)
		require.Equal(t, seed.AccessToken, tr.accessToken())
		if len(tr.Warnings) == 0 {
			require.Zero(t, warnedReads, "token/ served without a warning after warning once")
			freshReads++
			continue
		}
		warnedReads++
		warning := strings.Join(tr.Warnings, "\n")
		assert.Contains(t, warning, "could not replace the token")
		assert.Contains(t, warning, "no new attempt until")
		assert.LessOrEqual(t, tr.int("ttl"), int64(15))
	}
	elapsed := time.Since(start)
	refused := em.RefusedAttempts(em.User.Username)
	t.Logf("%s of reads: %d creds/ reads refused (%d held back), token/ %d fresh and %d with a warning; %d refused attempts at IRIS; slowest held read %s",
		elapsed.Round(time.Second), credsFailed, heldReads, freshReads, warnedReads, refused, slowest.Round(time.Millisecond))
	require.GreaterOrEqual(t, elapsed, readFor)
	assert.Positive(t, refused, "IRIS never saw the changed password refused")
	assert.LessOrEqual(t, refused, maxRefused, "the plugin kept retrying refused credentials")
	assert.False(t, em.Locked(em.User.Username), "the API user was locked out")
	assert.Positive(t, warnedReads, "token/ was never read while due, so this test proves nothing about it")
	assert.GreaterOrEqual(t, heldReads, credsFailed-maxRefused, "creds/ reads were not held back")
	assert.Less(t, slowest, 2*time.Second, "reads during a hold did not answer at once")

	_, st := v.readStatus(t, v.rootToken(), name)
	assert.NotEmpty(t, st.GrantsHeldUntil)
	assert.Contains(t, st.LastFailure, "invalid_grant")
	assert.Equal(t, refused, st.ConsecutiveFailures, "status/ counts failures other than the refused attempts")

	// The operator writes the new password: the hold ends at once.
	v.mustCLI(t, "write", mountPath+"/config/"+name, "password="+newPassword)
	lt := v.readCreds(t, name)
	assert.Equal(t, "password", em.issuedFor(t, lt.Data.AccessToken).GrantType)
	res, tr := v.readToken(t, name)
	require.Equal(t, http.StatusOK, res.Status, res.Raw)
	assert.Empty(t, tr.Warnings)
	assert.NotEqual(t, seed.AccessToken, tr.accessToken())
	assert.Equal(t, refused, em.RefusedAttempts(em.User.Username))
	assert.False(t, em.Locked(em.User.Username))
	_, st = v.readStatus(t, v.rootToken(), name)
	assert.Empty(t, st.GrantsHeldUntil)
	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	v.waitLeaseGone(t, lt.LeaseID)
}

// TestConcurrentHold changes the API user's password in Trackunit Manager
// (the emulator, answering in 200 ms and locking after 5 consecutive
// refusals), restarts the plugin so that nothing is proven, and then sends
// 8 creds/ reads, 8 token/ reads of a second name of the same API user
// (which holds no token yet) and 8 lease renewals at once: IRIS sees one
// refused password grant, the others wait for it and answer with the hold,
// and the user is not locked.
func TestConcurrentHold(t *testing.T) {
	t.Parallel()
	const burst = 8
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })
	em := newEmulator(t, rec, time.Hour)
	em.SetLockoutThreshold(5)
	v.writeConfig(t, "burst", em, "renewable_leases=true")
	v.writeConfig(t, "burst-token", em, "verify=false")
	leases := make([]string, burst)
	for i := range leases {
		leases[i] = v.readCreds(t, "burst").LeaseID
	}

	newPassword := "pw+&%~" + randomHex(20)
	rec.addSecret("new password", newPassword)
	em.SetPassword(em.User.Username, newPassword)
	em.RevokeAll(em.User.Username)
	// The API rather than `vault plugin reload`, whose flags OpenBao's CLI
	// spells otherwise.
	v.mustCLI(t, "write", "sys/plugins/reload/backend", "plugin="+pluginName)
	em.SetLatency(200 * time.Millisecond)

	var paths []string
	for range burst {
		paths = append(paths, mountPath+"/creds/burst", mountPath+"/token/burst-token")
	}
	renewErrs := make([]error, burst)
	var wg sync.WaitGroup
	for i, id := range leases {
		wg.Go(func() { _, renewErrs[i] = v.api().Sys().Renew(id, 0) })
	}
	reads := collect(v.timedReads(paths...))
	wg.Wait()

	refused := em.RefusedAttempts(em.User.Username)
	t.Logf("%d refused attempts at IRIS, %d password grants", refused, len(em.requestsOf("password")))
	assert.Equal(t, 1, refused, "the grants did not wait for the one attempt")
	assert.False(t, em.Locked(em.User.Username), "the API user was locked out")
	for _, r := range reads {
		require.NoError(t, r.err)
		assert.Equal(t, http.StatusBadGateway, r.res.Status, "%s: %s", r.path, r.res.Raw)
		assert.Contains(t, r.res.errorsText(), "invalid_grant", r.path)
	}
	for _, err := range renewErrs {
		assert.ErrorContains(t, err, "invalid_grant")
	}
	for _, name := range []string{"burst", "burst-token"} {
		_, st := v.readStatus(t, v.rootToken(), name)
		assert.NotEmpty(t, st.GrantsHeldUntil, name)
		assert.Contains(t, st.GrantsHeldBecause, "invalid_grant", name)
	}

	em.SetLatency(0)
	v.mustCLI(t, "write", mountPath+"/config/burst", "password="+newPassword)
	lt := v.readCreds(t, "burst")
	_, st := v.readStatus(t, v.rootToken(), "burst-token")
	assert.Empty(t, st.GrantsHeldUntil, "a write to one name did not end the hold of the API user")
	assert.Equal(t, refused, em.RefusedAttempts(em.User.Username))
	v.mustCLI(t, "lease", "revoke", lt.LeaseID)
	for _, id := range leases {
		v.mustCLI(t, "lease", "revoke", id)
	}
}

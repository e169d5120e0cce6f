//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The consumers of docs/consumers.md, each with its policy read from that
// page, run through a real Vault with a token that has exactly that policy
// (and Vault's default policy).

// Policy names, as the page writes them with `vault policy write`; each is
// also the name of the page's block that holds the policy (name + ".hcl").
const (
	policyCI         = "iris-ci-fleet"
	policyCreds      = "iris-creds-fleet"
	policyMonitoring = "iris-monitoring"
	policyOperator   = "iris-operator"
	policyRotator    = "iris-rotator"

	// consumerName is the API user the page's consumer policies name;
	// otherName is one they do not.
	consumerName = "fleet"
	otherName    = "other"
)

// writeDocPolicy stores the page's policy under its name.
func (v *vaultServer) writeDocPolicy(t testing.TB, name string) {
	t.Helper()
	path := filepath.Join(v.dir, name+".hcl")
	require.NoError(t, os.WriteFile(path, []byte(docBlock(t, consumersPage, name+".hcl")), 0o600))
	v.mustCLI(t, "policy", "write", name, path)
}

// tokenWithPolicies creates a token with exactly these policies and checks
// that Vault says so.
func (v *vaultServer) tokenWithPolicies(t testing.TB, noDefault bool, policies ...string) string {
	t.Helper()
	args := []string{"token", "create", "-format=json", "-ttl=30m"}
	if noDefault {
		args = append(args, "-no-default-policy")
	}
	for _, p := range policies {
		args = append(args, "-policy="+p)
	}
	var out struct {
		Auth struct {
			ClientToken string   `json:"client_token"`
			Policies    []string `json:"policies"`
		} `json:"auth"`
	}
	v.cliJSON(t, &out, args...)
	want := append([]string(nil), policies...)
	if !noDefault {
		want = append(want, "default")
	}
	require.ElementsMatch(t, want, out.Auth.Policies, "the token's policies")
	return out.Auth.ClientToken
}

// clientAs is the recorded API client with another token.
func (v *vaultServer) clientAs(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := v.api().Clone()
	require.NoError(t, err)
	c.SetToken(token)
	return c
}

// rawAs is raw with another token.
func (v *vaultServer) rawAs(t testing.TB, token, method, path string, body any) apiResult {
	t.Helper()
	return rawWith(t, v.clientAs(t, token), method, path, body)
}

// refusal is one request a policy must refuse with Vault's 403.
type refusal struct {
	what   string
	method string
	path   string
	body   map[string]any
}

// checkRefusals sends each request with token and fails the test for every
// one that Vault does not refuse with "permission denied".
func (v *vaultServer) checkRefusals(t *testing.T, token string, refusals []refusal) {
	t.Helper()
	for _, r := range refusals {
		res := v.rawAs(t, token, r.method, r.path, r.body)
		if res.Status != http.StatusForbidden || !strings.Contains(res.errorsText(), "permission denied") {
			t.Errorf("%s (%s %s): want 403 permission denied, got %d: %s", r.what, r.method, r.path, res.Status, res.Raw)
		}
	}
}

// checkWidenedAllows widens the page's policy and checks that Vault then
// lets each refused request through: the refusals are the policy's doing,
// and would fail if the page's policy were widened. Vault takes the most
// specific matching path, so the widening grants everything on each of the
// policy's own paths as well as on iris/* and sys/leases/*.
func (v *vaultServer) checkWidenedAllows(t *testing.T, policy string, refusals []refusal) {
	t.Helper()
	written := docBlock(t, consumersPage, policy+".hcl")
	paths := []string{mountPath + "/*", "sys/leases/*"}
	for _, m := range policyPathRE.FindAllStringSubmatch(written, -1) {
		paths = append(paths, m[1])
	}
	hcl := written
	for _, p := range paths {
		// Vault merges blocks of one path, and keeps a block's
		// allowed_parameters unless another allows every key.
		hcl += fmt.Sprintf("path %q {\n  capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\", \"sudo\"]\n  allowed_parameters = {\n    \"*\" = []\n  }\n}\n", p)
	}
	widened := policy + "-widened"
	path := filepath.Join(v.dir, widened+".hcl")
	require.NoError(t, os.WriteFile(path, []byte(hcl), 0o600))
	v.mustCLI(t, "policy", "write", widened, path)
	token := v.tokenWithPolicies(t, false, widened)
	for _, r := range refusals {
		res := v.rawAs(t, token, r.method, r.path, r.body)
		if res.Status == http.StatusForbidden {
			t.Errorf("%s (%s %s): still refused with the policy widened, so the check does not test the policy: %s", r.what, r.method, r.path, res.Raw)
		}
	}
}

var policyPathRE = regexp.MustCompile(`(?m)^path "([^"]+)"`)

// readsConfig are the config/ requests only the operator may make.
func readsConfig(name string) []refusal {
	return []refusal{
		{"read config/" + name, "GET", mountPath + "/config/" + name, nil},
		{"list config/", "LIST", mountPath + "/config/", nil},
	}
}

// TestConsumers runs every consumer docs/consumers.md names against one
// Vault dev server, each with its policy from that page.
func TestConsumers(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	em := newEmulator(t, rec, time.Hour)
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	for _, name := range []string{consumerName, otherName} {
		v.writeConfig(t, name, em)
	}
	for _, p := range []string{policyCI, policyCreds, policyMonitoring, policyOperator, policyRotator} {
		v.writeDocPolicy(t, p)
	}

	t.Run("CIJob", func(t *testing.T) {
		t.Parallel()
		testCIJob(t, v, em)
	})
	t.Run("CIPolicy", func(t *testing.T) {
		t.Parallel()
		testCIPolicy(t, v, em)
	})
	t.Run("CredsPolicy", func(t *testing.T) {
		t.Parallel()
		testCredsPolicy(t, v, em)
	})
	t.Run("MonitoringPolicy", func(t *testing.T) {
		t.Parallel()
		testMonitoringPolicy(t, v, em)
	})
	t.Run("OperatorPolicy", func(t *testing.T) {
		t.Parallel()
		testOperatorPolicy(t, v, rec)
	})
	t.Run("RotatorPolicy", func(t *testing.T) {
		t.Parallel()
		testRotatorPolicy(t, v, rec)
	})
	t.Run("Wrapping", func(t *testing.T) {
		t.Parallel()
		testWrapping(t, v, em)
	})
}

// requireLive fails unless IRIS would accept token now.
func requireLive(t testing.TB, em *emulator, token, what string) {
	t.Helper()
	require.NotEmpty(t, token, "%s: no token", what)
	active, _ := em.Introspect(token)
	require.True(t, active, "%s: the emulator does not know the token as live", what)
}

// testCIPolicy: read on token/fleet and nothing else of the mount; with
// Vault's default policy, lease lookup and renewal pass the ACL, and without
// it they do not.
func testCIPolicy(t *testing.T, v *vaultServer, em *emulator) {
	token := v.tokenWithPolicies(t, false, policyCI)

	out := v.cliWithToken(t, token, "read", "-field=access_token", mountPath+"/token/"+consumerName)
	require.Zero(t, out.ExitCode, "%s", out)
	requireLive(t, em, strings.TrimSpace(out.Stdout), "token/ read with the CI policy")

	// A creds/ lease of someone else, for the lease checks.
	lease := v.readCreds(t, consumerName).LeaseID
	refusals := append([]refusal{
		{"another name's token", "GET", mountPath + "/token/" + otherName, nil},
		{"creds/ of its own name", "GET", mountPath + "/creds/" + consumerName, nil},
		{"status/ of its own name", "GET", mountPath + "/status/" + consumerName, nil},
		{"revoking a lease", "PUT", "sys/leases/revoke", map[string]any{"lease_id": lease}},
	}, readsConfig(consumerName)...)
	v.checkRefusals(t, token, refusals)

	// What Vault's default policy still allows, as the page says: looking
	// up and renewing any lease. The lease is not renewable, so the
	// renewal fails in the engine, past the ACL.
	res := v.rawAs(t, token, "PUT", "sys/leases/lookup", map[string]any{"lease_id": lease})
	assert.Equal(t, http.StatusOK, res.Status, "the default policy allows looking up any lease: %s", res.Raw)
	res = v.rawAs(t, token, "PUT", "sys/leases/renew", map[string]any{"lease_id": lease})
	assert.NotEqual(t, http.StatusForbidden, res.Status, "the default policy allows renewing any lease: %s", res.Raw)
	assert.Contains(t, res.errorsText(), "not renewable")

	// Trimmed as the page suggests: without the default policy both are
	// refused, and the token still reads what it needs.
	trimmed := v.tokenWithPolicies(t, true, policyCI)
	out = v.cliWithToken(t, trimmed, "read", "-field=access_token", mountPath+"/token/"+consumerName)
	require.Zero(t, out.ExitCode, "%s", out)
	requireLive(t, em, strings.TrimSpace(out.Stdout), "token/ read without the default policy")
	v.checkRefusals(t, trimmed, []refusal{
		{"lease lookup without the default policy", "PUT", "sys/leases/lookup", map[string]any{"lease_id": lease}},
		{"lease renewal without the default policy", "PUT", "sys/leases/renew", map[string]any{"lease_id": lease}},
	})

	v.checkWidenedAllows(t, policyCI, refusals)
}

// testCredsPolicy: its own leased tokens, revoking its own lease by path,
// and nothing else.
func testCredsPolicy(t *testing.T, v *vaultServer, em *emulator) {
	token := v.tokenWithPolicies(t, false, policyCreds)

	var creds leasedToken
	out := v.cliWithToken(t, token, "read", "-format=json", mountPath+"/creds/"+consumerName)
	require.Zero(t, out.ExitCode, "%s", out)
	require.NoError(t, json.Unmarshal([]byte(out.Stdout), &creds))
	requireLive(t, em, creds.Data.AccessToken, "creds/ read with the creds policy")
	require.True(t, strings.HasPrefix(creds.LeaseID, mountPath+"/creds/"+consumerName+"/"), "lease %q", creds.LeaseID)

	// `vault lease revoke` names the lease in the path, which the policy
	// grants.
	v.mustCLIAs(t, token, "lease", "revoke", creds.LeaseID)
	v.waitLeaseGone(t, creds.LeaseID)

	otherLease := v.readCreds(t, otherName).LeaseID
	refusals := append([]refusal{
		{"another name's creds/", "GET", mountPath + "/creds/" + otherName, nil},
		{"the shared token", "GET", mountPath + "/token/" + consumerName, nil},
		{"revoking another name's lease", "PUT", "sys/leases/revoke/" + otherLease, nil},
		{"revoking a lease named in the body", "PUT", "sys/leases/revoke", map[string]any{"lease_id": otherLease}},
		// A prefix no lease has: the widened check must not end leases
		// other subtests hold.
		{"revoking by prefix", "PUT", "sys/leases/revoke-prefix/" + mountPath + "/creds/" + consumerName + "/none-" + randomHex(4), nil},
	}, readsConfig(consumerName)...)
	v.checkRefusals(t, token, refusals)
	v.checkWidenedAllows(t, policyCreds, refusals)
}

// testMonitoringPolicy: metrics/ and status/ (the mount's and each name's)
// read, status/ listed, never a token or a secret.
func testMonitoringPolicy(t *testing.T, v *vaultServer, em *emulator) {
	token := v.tokenWithPolicies(t, false, policyMonitoring)
	// A shared token for status/ to report on.
	_, tr := v.readToken(t, consumerName)
	require.NoError(t, tr.check())

	var names []string
	out := v.cliWithToken(t, token, "list", "-format=json", mountPath+"/status")
	require.Zero(t, out.ExitCode, "%s", out)
	require.NoError(t, json.Unmarshal([]byte(out.Stdout), &names))
	require.Subset(t, names, []string{consumerName, otherName})

	var status struct {
		Data map[string]any `json:"data"`
	}
	out = v.cliWithToken(t, token, "read", "-format=json", mountPath+"/status/"+consumerName)
	require.Zero(t, out.ExitCode, "%s", out)
	require.NoError(t, json.Unmarshal([]byte(out.Stdout), &status))
	require.Equal(t, true, status.Data["token_held"], "status/ reports the shared token")
	require.NotEmpty(t, status.Data["token_expires_at"])
	for _, it := range em.Issued() {
		require.NotContains(t, out.Stdout, it.AccessToken, "status/ shows an access token")
		if it.RefreshToken != "" {
			require.NotContains(t, out.Stdout, it.RefreshToken, "status/ shows a refresh token")
		}
	}
	for _, key := range []string{"access_token", "refresh_token", "client_secret", "password"} {
		require.NotContains(t, status.Data, key)
	}

	out = v.cliWithToken(t, token, "read", "-format=json", mountPath+"/status")
	require.Zero(t, out.ExitCode, "%s", out)
	var mount struct {
		Data struct {
			Counts map[string]int `json:"counts"`
			Total  int            `json:"total"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(out.Stdout), &mount))
	require.GreaterOrEqual(t, mount.Data.Total, 2)
	require.GreaterOrEqual(t, mount.Data.Counts["healthy"], 1, "%s", out.Stdout)

	res := v.rawAs(t, token, "GET", mountPath+"/metrics", nil)
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Raw)
	require.Contains(t, res.Raw, `iris_credential_token_expiry_timestamp_seconds{kind="api_user",name="`+consumerName+`"}`)
	assertNoTokenIn(t, em, res.Raw, "metrics/ read by monitoring")

	refusals := append([]refusal{
		{"the shared token", "GET", mountPath + "/token/" + consumerName, nil},
		{"creds/", "GET", mountPath + "/creds/" + consumerName, nil},
		{"the mount's settings", "GET", mountPath + "/settings", nil},
	}, readsConfig(consumerName)...)
	v.checkRefusals(t, token, refusals)
	v.checkWidenedAllows(t, policyMonitoring, refusals)
}

// testOperatorPolicy: the whole config/ lifecycle and the mount settings,
// secrets never read back, no token.
func testOperatorPolicy(t *testing.T, v *vaultServer, rec *recorder) {
	em := newEmulator(t, rec, time.Hour)
	token := v.tokenWithPolicies(t, false, policyOperator)
	const name = "ops"

	v.mustCLIAs(t, token, configArgs(name, em)...)
	out := v.mustCLIAs(t, token, "read", "-format=json", mountPath+"/config/"+name)
	var cfg struct {
		Data map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &cfg))
	require.Equal(t, em.User.ClientID, cfg.Data["client_id"])
	require.NotContains(t, cfg.Data, "client_secret")
	require.NotContains(t, cfg.Data, "password")
	require.Contains(t, v.mustCLIAs(t, token, "list", mountPath+"/config"), name)
	v.mustCLIAs(t, token, "write", mountPath+"/config/"+name, "request_timeout=20")
	require.Equal(t, 20, v.readConfig(t, name).RequestTimeout)
	v.mustCLIAs(t, token, "read", mountPath+"/settings")
	v.mustCLIAs(t, token, "write", mountPath+"/settings", "max_background_grants=8")

	refusals := []refusal{
		{"the shared token", "GET", mountPath + "/token/" + name, nil},
		{"creds/", "GET", mountPath + "/creds/" + name, nil},
	}
	v.checkRefusals(t, token, refusals)
	v.checkWidenedAllows(t, policyOperator, refusals)

	v.mustCLIAs(t, token, "delete", mountPath+"/config/"+name)
	require.NotContains(t, v.listConfigs(t), name)
}

// testRotatorPolicy: update-only on config/: stores a changed password, but
// creates, reads, lists and deletes nothing, reads no token, and cannot
// point the stored secrets at another host.
func testRotatorPolicy(t *testing.T, v *vaultServer, rec *recorder) {
	// An API user of its own, whose password changes.
	em := newEmulator(t, rec, time.Hour)
	const name = "rotated"
	v.writeConfig(t, name, em, "revocation_url="+em.RevocationURL)
	token := v.tokenWithPolicies(t, false, policyRotator)

	newPassword := "pw+&%~" + randomHex(20)
	rec.addSecret("new password", newPassword)
	em.SetPassword(em.User.Username, newPassword)
	v.mustCLIAs(t, token, "write", mountPath+"/config/"+name, "password="+newPassword)
	requireLive(t, em, v.readCreds(t, name).Data.AccessToken, "creds/ after the rotated password was stored")

	// Vault itself refuses every other field, secrets carried or not, so
	// the token can neither redirect the secrets nor widen what the
	// credential's tokens may do; nothing reaches the other host.
	var calls atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "collected", http.StatusTeapot)
	}))
	t.Cleanup(elsewhere.Close)
	secrets := []string{"client_secret=" + em.User.ClientSecret, "password=" + newPassword}
	docLines := docRotatorError(t)
	for _, change := range []string{
		"token_url=" + elsewhere.URL + "/token",
		"revocation_url=" + elsewhere.URL + "/revoke",
		"scopes=api,offline_access,admin",
		"renewable_leases=true",
		"ttl=720h",
		"max_ttl=720h",
	} {
		for _, carried := range [][]string{nil, secrets, append(secrets, "verify=false")} {
			args := append([]string{"write", mountPath + "/config/" + name, change}, carried...)
			res := v.cliWithToken(t, token, args...)
			require.NotZero(t, res.ExitCode, "%v: %s", args, res)
			for _, line := range docLines {
				require.Contains(t, res.Stderr, line, "the rotator section's example of this refusal")
			}
		}
	}
	require.Zero(t, calls.Load(), "the other host was called")
	cfg := v.readConfig(t, name)
	require.Equal(t, em.TokenURL, cfg.TokenURL)
	require.Equal(t, em.RevocationURL, cfg.RevocationURL)
	// And the password still rotates, verify=false included.
	v.mustCLIAs(t, token, "write", mountPath+"/config/"+name, "password="+newPassword, "verify=false")
	requireLive(t, em, v.readCreds(t, name).Data.AccessToken, "creds/ after a second rotation")

	refusals := append([]refusal{
		{"creating an API user", "PUT", mountPath + "/config/new-" + randomHex(4), map[string]any{
			"client_id": em.User.ClientID, "client_secret": em.User.ClientSecret,
			"username": em.User.Username, "password": newPassword, "token_url": em.TokenURL, "verify": false,
		}},
		{"the shared token", "GET", mountPath + "/token/" + name, nil},
		{"creds/", "GET", mountPath + "/creds/" + name, nil},
	}, readsConfig(name)...)
	// Last: the widened check deletes it.
	refusals = append(refusals, refusal{"deleting an API user", "DELETE", mountPath + "/config/" + name, nil})
	v.checkRefusals(t, token, refusals)
	v.checkWidenedAllows(t, policyRotator, refusals)
}

// testWrapping: response-wrapped reads of both paths unwrap to live tokens,
// creds/ with its lease, and -field=access_token prints a live token.
func testWrapping(t *testing.T, v *vaultServer, em *emulator) {
	ciToken := v.tokenWithPolicies(t, false, policyCI)
	credsToken := v.tokenWithPolicies(t, false, policyCreds)

	type wrapped struct {
		WrapInfo struct {
			Token        string `json:"token"`
			TTL          int    `json:"ttl"`
			CreationPath string `json:"creation_path"`
		} `json:"wrap_info"`
		Data map[string]any `json:"data"`
	}
	wrapRead := func(token, path string) string {
		t.Helper()
		var w wrapped
		out := v.cliWithToken(t, token, "read", "-wrap-ttl=60s", "-format=json", path)
		require.Zero(t, out.ExitCode, "%s", out)
		require.NoError(t, json.Unmarshal([]byte(out.Stdout), &w))
		require.NotEmpty(t, w.WrapInfo.Token, "no wrapping token")
		require.Equal(t, 60, w.WrapInfo.TTL)
		require.Equal(t, path, w.WrapInfo.CreationPath)
		require.Empty(t, w.Data, "a wrapped read returned the data itself")
		return w.WrapInfo.Token
	}

	// token/: unwrap gives the shared token, live, with its rotation data.
	wrap := wrapRead(ciToken, mountPath+"/token/"+consumerName)
	out := v.cliWithToken(t, ciToken, "unwrap", "-format=json", wrap)
	require.Zero(t, out.ExitCode, "%s", out)
	tr, err := decodeTokenResponse([]byte(out.Stdout))
	require.NoError(t, err)
	require.NoError(t, tr.check())
	requireLive(t, em, tr.accessToken(), "unwrapped token/")
	res := v.cliWithToken(t, ciToken, "unwrap", wrap)
	require.NotZero(t, res.ExitCode, "a wrapping token unwrapped twice: %s", res)

	// The page's example as printed: the table's keys, then unwrap
	// -field=access_token with the wrapping token from the table.
	out = v.cliWithToken(t, ciToken, "read", "-wrap-ttl=60s", mountPath+"/token/"+consumerName)
	require.Zero(t, out.ExitCode, "%s", out)
	wrap = ""
	for _, line := range strings.Split(out.Stdout, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "wrapping_token:" {
			wrap = f[1]
		}
	}
	require.NotEmpty(t, wrap, "no wrapping_token in the CLI's table:\n%s", out.Stdout)
	keys := docWrapKeyRE.FindAllStringSubmatch(docBlock(t, consumersPage, "wrapping.txt"), -1)
	require.NotEmpty(t, keys, "the page's wrapping example shows no wrapping_ keys")
	for _, m := range keys {
		require.Contains(t, out.Stdout, m[1], "the page's wrapping example shows a key the CLI does not print")
	}
	out = v.cliWithToken(t, ciToken, "unwrap", "-field=access_token", wrap)
	require.Zero(t, out.ExitCode, "%s", out)
	requireLive(t, em, strings.TrimSpace(out.Stdout), "unwrap -field=access_token")

	// creds/: unwrap gives a live token and its lease.
	wrap = wrapRead(credsToken, mountPath+"/creds/"+consumerName)
	var creds leasedToken
	out = v.cliWithToken(t, credsToken, "unwrap", "-format=json", wrap)
	require.Zero(t, out.ExitCode, "%s", out)
	require.NoError(t, json.Unmarshal([]byte(out.Stdout), &creds))
	requireLive(t, em, creds.Data.AccessToken, "unwrapped creds/")
	require.True(t, strings.HasPrefix(creds.LeaseID, mountPath+"/creds/"+consumerName+"/"), "unwrapped lease %q", creds.LeaseID)
	require.Positive(t, creds.LeaseDuration)
	ok, detail := v.leaseExists(t, creds.LeaseID)
	require.True(t, ok, "the unwrapped lease does not exist: %s", detail)
	v.mustCLIAs(t, credsToken, "lease", "revoke", creds.LeaseID)
	v.waitLeaseGone(t, creds.LeaseID)

	// -field=access_token on both paths.
	for _, c := range []struct{ token, path string }{
		{ciToken, mountPath + "/token/" + consumerName},
		{credsToken, mountPath + "/creds/" + consumerName},
	} {
		out := v.cliWithToken(t, c.token, "read", "-field=access_token", c.path)
		require.Zero(t, out.ExitCode, "%s", out)
		tok := out.Stdout
		require.Equal(t, strings.TrimSpace(tok), tok, "-field prints the token alone")
		requireLive(t, em, tok, fmt.Sprintf("read -field=access_token %s", c.path))
	}
}

var docWrapKeyRE = regexp.MustCompile(`(?m)^(wrapping_[a-z_]+:)`)

// docRotatorError is what the rotator section's example of Vault refusing
// a field the rotator policy does not allow says: the status line and the
// reason (Vault may wrap the reason in "1 error occurred:").
func docRotatorError(t testing.TB) []string {
	t.Helper()
	example := docBlock(t, consumersPage, "rotator-refusal.txt")
	lines := []string{"Code: 403. Errors:", "* permission denied"}
	for _, line := range lines {
		require.Contains(t, example, line, "the rotator section's example")
	}
	return lines
}

// mustCLIAs is mustCLI with another token.
func (v *vaultServer) mustCLIAs(t testing.TB, token string, args ...string) string {
	t.Helper()
	res := v.cliWithToken(t, token, args...)
	if res.ExitCode != 0 {
		t.Fatalf("%s", res)
	}
	return res.Stdout
}

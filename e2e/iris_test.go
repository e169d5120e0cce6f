//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Helpers that drive the plugin's paths through the vault CLI. Tests for new
// paths (token/<name>) can build on the same ones.

// configArgs are the `vault write` arguments storing em's API user at
// iris/config/<name>, with extra key=value pairs added or replacing the
// defaults: the CLI turns a key given twice into a list.
func configArgs(name string, em *emulator, extra ...string) []string {
	return writeArgs(name, []string{
		"client_id=" + em.User.ClientID,
		"client_secret=" + em.User.ClientSecret,
		"username=" + em.User.Username,
		"password=" + em.User.Password,
		"token_url=" + em.TokenURL,
	}, extra)
}

// writeConfig stores em's API user at iris/config/<name>; it must succeed.
func (v *vaultServer) writeConfig(t testing.TB, name string, em *emulator, extra ...string) {
	t.Helper()
	v.mustCLI(t, configArgs(name, em, extra...)...)
}

// configData is what a config read returns.
type configData struct {
	ClientID        string   `json:"client_id"`
	Username        string   `json:"username"`
	Scopes          []string `json:"scopes"`
	TokenURL        string   `json:"token_url"`
	RevocationURL   string   `json:"revocation_url"`
	TTL             int      `json:"ttl"`
	MaxTTL          int      `json:"max_ttl"`
	RequestTimeout  int      `json:"request_timeout"`
	RenewableLeases bool     `json:"renewable_leases"`
}

// readConfigRaw returns the data of iris/config/<name> as the CLI prints it,
// every key included, so that tests can look for keys that must be absent.
func (v *vaultServer) readConfigRaw(t testing.TB, name string) map[string]any {
	t.Helper()
	var out struct {
		Data map[string]any `json:"data"`
	}
	v.cliJSON(t, &out, "read", "-format=json", mountPath+"/config/"+name)
	return out.Data
}

func (v *vaultServer) readConfig(t testing.TB, name string) configData {
	t.Helper()
	var out struct {
		Data configData `json:"data"`
	}
	v.cliJSON(t, &out, "read", "-format=json", mountPath+"/config/"+name)
	return out.Data
}

// listConfigs returns the names under iris/config/ (none: empty slice).
func (v *vaultServer) listConfigs(t testing.TB) []string {
	t.Helper()
	res := v.cli(t, "list", "-format=json", mountPath+"/config")
	if res.ExitCode == 2 {
		// The CLI exits 2 when there is nothing to list.
		return nil
	}
	require.Zero(t, res.ExitCode, "%s", res)
	var names []string
	require.NoError(t, jsonUnmarshal(res.Stdout, &names))
	return names
}

// tokenData is the data of a creds read and of a renewal.
type tokenData struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	Scope       string `json:"scope"`
	ExpiresAt   string `json:"expires_at"`
	ExpiresIn   int    `json:"expires_in"`
}

func (d tokenData) expiresAt(t testing.TB) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, d.ExpiresAt)
	require.NoError(t, err, "expires_at %q", d.ExpiresAt)
	return at
}

// leasedToken is a creds read or lease renewal as the CLI prints it.
type leasedToken struct {
	LeaseID       string    `json:"lease_id"`
	LeaseDuration int       `json:"lease_duration"`
	Renewable     bool      `json:"renewable"`
	Data          tokenData `json:"data"`
	Warnings      []string  `json:"warnings"`
}

func (v *vaultServer) readCreds(t testing.TB, name string) leasedToken {
	t.Helper()
	var out leasedToken
	v.cliJSON(t, &out, "read", "-format=json", mountPath+"/creds/"+name)
	require.NotEmpty(t, out.LeaseID, "creds read returned no lease")
	require.NotEmpty(t, out.Data.AccessToken, "creds read returned no access token")
	return out
}

func (v *vaultServer) renewLease(t testing.TB, leaseID string, flags ...string) leasedToken {
	t.Helper()
	var out leasedToken
	args := append([]string{"lease", "renew", "-format=json"}, flags...)
	v.cliJSON(t, &out, append(args, leaseID)...)
	return out
}

// leaseInfo is what `vault lease lookup` says about a lease.
type leaseInfo struct {
	ExpireTime time.Time `json:"expire_time"`
	IssueTime  time.Time `json:"issue_time"`
	TTL        int       `json:"ttl"`
	Renewable  bool      `json:"renewable"`
}

func (v *vaultServer) lookupLease(t testing.TB, leaseID string) leaseInfo {
	t.Helper()
	var out struct {
		Data leaseInfo `json:"data"`
	}
	v.cliJSON(t, &out, "lease", "lookup", "-format=json", leaseID)
	return out.Data
}

// leaseExists asks Vault whether it still knows the lease.
func (v *vaultServer) leaseExists(t testing.TB, leaseID string) (bool, string) {
	t.Helper()
	res := v.cli(t, "lease", "lookup", "-format=json", leaseID)
	if res.ExitCode == 0 {
		return true, "lease still exists"
	}
	if strings.Contains(res.Stderr, "invalid lease") {
		return false, ""
	}
	t.Fatalf("unexpected lease lookup failure: %s", res)
	return false, ""
}

// waitLeaseGone polls until Vault has forgotten the lease: `vault lease
// revoke` only queues the revocation.
func (v *vaultServer) waitLeaseGone(t testing.TB, leaseID string) {
	t.Helper()
	eventually(t, 30*time.Second, "lease "+leaseID+" to be revoked", func() (bool, string) {
		exists, detail := v.leaseExists(t, leaseID)
		return !exists, detail
	})
}

package iris

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"vault-plugin-secrets-iris/irisauth"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// refusingTransport fails every request, and counts them: with verify=false
// no config write may call IRIS.
type refusingTransport struct{ calls atomic.Int32 }

func (r *refusingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	r.calls.Add(1)
	return nil, errors.New("no request may leave a verify=false config write")
}

// fuzzSecret and fuzzPassword are what the fuzzed config writes store as
// client_secret and password; no response may ever show them.
const (
	fuzzSecret   = "fuzz-client-secret-Hq2Zr"
	fuzzPassword = "fuzz-password-Lk7Wd"
)

// Bits of FuzzConfigInput's present mask: which fuzzed fields the first
// write sends.
const (
	presentScopes = 1 << iota
	presentTokenURL
	presentRevocationURL
	presentTTL
	presentMaxTTL
)

func FuzzConfigInput(f *testing.F) {
	all := uint8(presentScopes | presentTokenURL | presentRevocationURL | presentTTL | presentMaxTTL)
	for _, seed := range []struct {
		name, scopes, tokenURL, revocationURL, ttl, maxTTL string
		present                                            uint8
	}{
		{"demo", "api,offline_access", "https://auth.trackunit.com/token", "", "15m", "1h", all},
		{"demo", "api offline_access", "http://127.0.0.1:8200/token", "http://localhost/revoke", "900", "3600", all},
		{"a.b-c_d", "api", "http://[::1]:1/token", "https://iris.example/revoke", "0", "0", all},
		{"demo", "", "", "", "", "", 0},
		{"demo", "", "https://auth.trackunit.com/token", "", "", "", all},
		{"demo", "api,,  ,offline_access", "HTTPS://AUTH.TRACKUNIT.COM/token", "", "1h", "30m", all},
		{"demo", "api\x7f", "https://auth.trackunit.com/token", "", "", "", presentScopes},
		{"demo", "api \"x\"", "https://auth.trackunit.com/token", "", "", "", presentScopes},
		{"demo", "api", "http://auth.trackunit.com/token", "", "", "", presentTokenURL},
		{"demo", "api", "http://localhost.evil.example/token", "", "", "", presentTokenURL},
		{"demo", "api", "http://127.0.0.1.nip.io/token", "", "", "", presentTokenURL},
		{"demo", "api", "https://user:pass@auth.trackunit.com/token", "", "", "", presentTokenURL},
		{"demo", "api", "https://auth.trackunit.com/token?x=1#y", "", "", "", presentTokenURL},
		{"demo", "api", "ftp://auth.trackunit.com/token", "", "", "", presentTokenURL},
		{"demo", "api", "//auth.trackunit.com/token", "", "", "", presentTokenURL},
		{"demo", "api", "https:auth.trackunit.com", "", "", "", presentTokenURL},
		{"demo", "api", " https://auth.trackunit.com/token ", "", "", "", presentTokenURL},
		{"demo", "api", "https://auth.trackunit.com/token", "javascript:alert(1)", "", "", presentRevocationURL},
		{"demo", "api", "https://auth.trackunit.com/token", "http://10.0.0.1/revoke", "", "", presentRevocationURL},
		{"demo", "", "", "", "-5", "", presentTTL},
		{"demo", "", "", "", "2h", "1h", presentTTL | presentMaxTTL},
		{"demo", "", "", "", "1h", "", presentTTL},
		{"demo", "", "", "", "", "1m", presentMaxTTL},
		{"demo", "", "", "", "9999999999999", "", presentTTL},
		{"demo", "", "", "", "100000d", "1.5h", presentTTL | presentMaxTTL},
		{"demo", "", "", "", "soon", "1e3", presentTTL | presentMaxTTL},
		{"", "api", "https://auth.trackunit.com/token", "", "", "", all},
		{"-demo", "api", "https://auth.trackunit.com/token", "", "", "", all},
		{"de/mo", "api", "https://auth.trackunit.com/token", "", "", "", all},
		{"demo\n", "api", "https://auth.trackunit.com/token", "", "", "", all},
		{strings.Repeat("n", 129), "api", "https://auth.trackunit.com/token", "", "", "", all},
		{"dëmo", "api", "https://auth.trackunit.com/token", "", "", "", all},
	} {
		f.Add(seed.name, seed.scopes, seed.tokenURL, seed.revocationURL, seed.ttl, seed.maxTTL, seed.present)
	}
	f.Fuzz(func(t *testing.T, name, scopes, tokenURL, revocationURL, ttl, maxTTL string, present uint8) {
		transport := &refusingTransport{}
		client := newIRISClient(hclog.NewNullLogger())
		client.HTTP = &http.Client{Transport: transport}
		client.Retry = irisauth.RetryPolicy{MaxAttempts: 1}
		b := newBackend(backendOptions{client: client})
		conf := logical.TestBackendConfig()
		conf.Logger = hclog.NewNullLogger()
		storage := &logical.InmemStorage{}
		conf.StorageView = storage
		if err := b.Setup(context.Background(), conf); err != nil {
			t.Fatal(err)
		}

		fuzzed := map[string]interface{}{}
		for _, field := range []struct {
			bit   uint8
			key   string
			value string
		}{
			{presentScopes, keyScopes, scopes},
			{presentTokenURL, keyTokenURL, tokenURL},
			{presentRevocationURL, keyRevocationURL, revocationURL},
			{presentTTL, keyTTL, ttl},
			{presentMaxTTL, keyMaxTTL, maxTTL},
		} {
			if present&field.bit != 0 {
				fuzzed[field.key] = field.value
			}
		}
		create := map[string]interface{}{
			keyClientID:     "0oa-fuzz",
			keyClientSecret: fuzzSecret,
			keyUsername:     "fuzz-user",
			keyPassword:     fuzzPassword,
			keyVerify:       false,
		}
		for k, v := range fuzzed {
			create[k] = v
		}
		// The same values again as an update of what the first write
		// stored (or as a create of a config with no secrets, which must
		// fail), then an update of every fuzzed field at once.
		update := map[string]interface{}{keyVerify: false}
		for k, v := range fuzzed {
			update[k] = v
		}
		everything := map[string]interface{}{
			keyVerify: false, keyScopes: scopes, keyTokenURL: tokenURL,
			keyRevocationURL: revocationURL, keyTTL: ttl, keyMaxTTL: maxTTL,
		}
		for _, data := range []map[string]interface{}{create, update, everything} {
			writeFuzzedConfig(t, b, storage, "config/"+name, data)
		}
		if n := transport.calls.Load(); n != 0 {
			t.Fatalf("%d requests left for IRIS with verify=false", n)
		}
	})
}

// writeFuzzedConfig writes path as Vault would (existence check, then
// create or update) and checks every stored config afterwards.
func writeFuzzedConfig(t *testing.T, b *backend, storage logical.Storage, path string, data map[string]interface{}) {
	t.Helper()
	ctx := context.Background()
	before := storageSnapshot(t, storage)

	req := &logical.Request{Operation: logical.CreateOperation, Path: path, Data: data, Storage: storage}
	if checkFound, exists, err := b.HandleExistenceCheck(ctx, req); err == nil && checkFound && exists {
		req.Operation = logical.UpdateOperation
	}
	resp, err := b.HandleRequest(ctx, req)
	failed := err != nil || (resp != nil && resp.IsError())
	requireNoSecretIn(t, "write response", resp, err)

	after := storageSnapshot(t, storage)
	if failed {
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Fatalf("a failed write (%v, %v) changed storage", err, resp)
		}
	} else if len(after) == 0 {
		t.Fatalf("a write to %q succeeded and stored nothing", path)
	}

	for key, raw := range after {
		name, ok := strings.CutPrefix(key, configStoragePrefix)
		if !ok {
			continue
		}
		var cfg credential
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatalf("stored %s does not decode: %v", key, err)
		}
		checkStoredConfig(t, name, &cfg)

		read, err := b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "config/" + name, Storage: storage})
		if err != nil || read == nil || read.IsError() {
			t.Fatalf("reading stored %s: %v %v", key, err, read)
		}
		requireNoSecretIn(t, "config read", read, nil)
		for _, secret := range []string{keyClientSecret, keyPassword} {
			if _, ok := read.Data[secret]; ok {
				t.Fatalf("config read returns %s", secret)
			}
		}
		if read.Data[keyTokenURL] != cfg.TokenURL {
			t.Fatalf("read token_url %v, stored %q", read.Data[keyTokenURL], cfg.TokenURL)
		}
	}
}

func checkStoredConfig(t *testing.T, name string, cfg *credential) {
	t.Helper()
	if !nameRegex.MatchString(name) || len(name) > maxNameLength {
		t.Fatalf("config stored under the invalid name %q", name)
	}
	if problem := endpointProblem(cfg.TokenURL); problem != "" {
		t.Fatalf("stored token_url %q: %s", cfg.TokenURL, problem)
	}
	if cfg.RevocationURL != "" {
		if problem := endpointProblem(cfg.RevocationURL); problem != "" {
			t.Fatalf("stored revocation_url %q: %s", cfg.RevocationURL, problem)
		}
	}
	if len(cfg.Scopes) == 0 {
		t.Fatal("stored with no scopes")
	}
	for _, s := range cfg.Scopes {
		if s == "" || strings.IndexFunc(s, func(r rune) bool {
			// RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
			return r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e
		}) >= 0 {
			t.Fatalf("stored scope %q is not a scope token", s)
		}
	}
	if cfg.TTL < 0 || cfg.MaxTTL < 0 {
		t.Fatalf("negative ttl %v or max_ttl %v", cfg.TTL, cfg.MaxTTL)
	}
	if cfg.TTL > 0 && cfg.MaxTTL > 0 && cfg.TTL > cfg.MaxTTL {
		t.Fatalf("ttl %v exceeds max_ttl %v", cfg.TTL, cfg.MaxTTL)
	}
	if cfg.RequestTimeout < minRequestTimeout || cfg.RequestTimeout > maxRequestTimeout {
		t.Fatalf("request_timeout %v", cfg.RequestTimeout)
	}
	if cfg.ClientSecret != fuzzSecret || cfg.Password != fuzzPassword || cfg.ClientID == "" || cfg.Username == "" {
		t.Fatalf("stored credentials changed: %q %q", cfg.ClientID, cfg.Username)
	}
	if cfg.Generation == "" {
		t.Fatal("stored without a generation")
	}
}

// endpointProblem is the rule for where credentials may go, written out
// independently of checkEndpointURL: https to a named host, or plain http
// to this machine, with no credentials, query or fragment in the URL.
func endpointProblem(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "does not parse"
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "has userinfo, a query, a fragment or no hierarchy"
	}
	host := u.Hostname()
	switch u.Scheme {
	case "https":
		if host == "" {
			return "https without a host"
		}
		return ""
	case "http":
		if strings.EqualFold(host, "localhost") {
			return ""
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return ""
		}
		return "plain http to a host that is not loopback"
	}
	return "neither https nor http"
}

func storageSnapshot(t *testing.T, s logical.Storage) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, prefix := range []string{configStoragePrefix, sessionStoragePrefix} {
		keys, err := s.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			entry, err := s.Get(ctx, prefix+k)
			if err != nil || entry == nil {
				t.Fatalf("listed %s%s but cannot get it: %v", prefix, k, err)
			}
			out[prefix+k] = string(entry.Value)
		}
	}
	return out
}

func requireNoSecretIn(t *testing.T, what string, resp *logical.Response, err error) {
	t.Helper()
	var text strings.Builder
	if err != nil {
		text.WriteString(err.Error())
	}
	if resp != nil {
		j, _ := json.Marshal(map[string]interface{}{"data": resp.Data, "warnings": resp.Warnings})
		text.Write(j)
	}
	for _, secret := range []string{fuzzSecret, fuzzPassword} {
		if strings.Contains(text.String(), secret) {
			t.Fatalf("%s shows a secret: %s", what, text.String())
		}
	}
}

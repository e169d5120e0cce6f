package iris

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
	"vault-plugin-secrets-iris/iristest"
)

// The benchmarks run the handlers in process against the emulator, so they
// measure the plugin's own cost per operation; `make bench` adds a load run
// against a real Vault for the end-to-end figures.

// benchEnv is a backend with real time and a quiet logger.
type benchEnv struct {
	b       *backend
	storage logical.Storage
}

func newBenchEnv(b *testing.B, extra map[string]interface{}) *benchEnv {
	b.Helper()
	emu := iristest.NewServer(demoUser)
	b.Cleanup(emu.Close)
	return newBenchEnvFor(b, map[string]interface{}{
		"client_id": demoUser.ClientID, "client_secret": demoUser.ClientSecret,
		"username": demoUser.Username, "password": demoUser.Password, "token_url": emu.TokenURL,
	}, extra)
}

// newKeyBenchEnv is newBenchEnv for an API key.
func newKeyBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	emu := iristest.NewServer()
	b.Cleanup(emu.Close)
	emu.AddAPIKey(demoKey)
	return newBenchEnvFor(b, map[string]interface{}{
		"kind": "api_key", "client_id": demoKey.ClientID, "client_secret": demoKey.ClientSecret,
		"scopes": "iris.assets.read", "token_url": emu.TokenV2URL,
	}, nil)
}

func newBenchEnvFor(b *testing.B, data, extra map[string]interface{}) *benchEnv {
	env := &benchEnv{b: newBackend(backendOptions{client: newIRISClient(hclog.NewNullLogger())})}
	conf := logical.TestBackendConfig()
	conf.Logger = hclog.NewNullLogger()
	conf.StorageView = &logical.InmemStorage{}
	env.storage = conf.StorageView
	if err := env.b.Setup(context.Background(), conf); err != nil {
		b.Fatal(err)
	}
	for k, v := range extra {
		data[k] = v
	}
	if resp, err := env.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "settings", Data: map[string]interface{}{"allowed_hosts": testAllowedHosts}, Storage: env.storage,
	}); err != nil || resp != nil {
		b.Fatal(resp, err)
	}
	if _, err := env.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.CreateOperation, Path: "config/demo", Data: data, Storage: env.storage,
	}); err != nil {
		b.Fatal(err)
	}
	return env
}

func benchRead(b *testing.B, env *benchEnv, path string) *logical.Response {
	resp, err := env.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.ReadOperation, Path: path, Storage: env.storage,
	})
	if err != nil || resp == nil || resp.IsError() {
		b.Fatalf("read %s: %v %v", path, resp, err)
	}
	return resp
}

// BenchmarkDirectTokenPost is the baseline: one password grant POSTed to
// the emulator without the plugin.
func BenchmarkDirectTokenPost(b *testing.B) {
	emu := iristest.NewServer(demoUser)
	defer emu.Close()
	client := irisauth.NewHTTPClient()
	body := url.Values{"grant_type": {"password"}, "username": {demoUser.Username},
		"password": {demoUser.Password}, "scope": {"api offline_access"}}.Encode()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, emu.TokenURL, strings.NewReader(body))
		req.SetBasicAuth(demoUser.ClientID, demoUser.ClientSecret)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatal(resp.Status)
		}
	}
}

func BenchmarkCredsRead(b *testing.B) {
	env := newBenchEnv(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, env, "creds/demo")
	}
}

func BenchmarkAPIKeyCredsRead(b *testing.B) {
	env := newKeyBenchEnv(b)
	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, env, "creds/demo")
	}
}

func BenchmarkAPIKeyTokenRead(b *testing.B) {
	env := newKeyBenchEnv(b)
	benchRead(b, env, "token/demo")
	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, env, "token/demo")
	}
}

func BenchmarkCredsRenew(b *testing.B) {
	env := newBenchEnv(b, map[string]interface{}{"renewable_leases": true})
	resp := benchRead(b, env, "creds/demo")
	lease := *resp.Secret
	lease.IssueTime = time.Now()
	b.ReportAllocs()
	for b.Loop() {
		req := &logical.Request{Operation: logical.RenewOperation, Path: "creds/demo", Secret: &lease, Storage: env.storage}
		renewed, err := env.b.HandleRequest(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		lease = *renewed.Secret
	}
}

func BenchmarkTokenRead(b *testing.B) {
	env := newBenchEnv(b, nil)
	benchRead(b, env, "token/demo")
	b.ReportAllocs()
	for b.Loop() {
		benchRead(b, env, "token/demo")
	}
}

func BenchmarkTokenReadParallel(b *testing.B) {
	env := newBenchEnv(b, nil)
	benchRead(b, env, "token/demo")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchRead(b, env, "token/demo")
		}
	})
}

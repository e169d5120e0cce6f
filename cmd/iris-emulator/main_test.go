package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{
		"127.0.0.1:8399": true,
		"127.0.0.2:0":    true,
		"[::1]:8399":     true,
		"localhost:0":    true,
		":8399":          false,
		"0.0.0.0:8399":   false,
		"[::]:8399":      false,
		"10.1.2.3:8399":  false,
		"example.com:80": false,
		"127.0.0.1":      false,
	} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
	}
}

func TestRefusesRemoteAddress(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"-addr", "0.0.0.0:0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-allow-remote") {
		t.Fatalf("run: %v", err)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr strings.Builder
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{
			"-addr", "127.0.0.1:0", "-ready-file", ready, "-token-lifetime", "90s",
			"-client-id", "0oatest", "-client-secret", "se+cr%et", "-username", "u", "-password", "pw+%",
		}, outW, &stderr)
		outW.Close()
	}()

	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading stdout: %v", err)
	}
	go io.Copy(io.Discard, outR)
	tokenURL := strings.TrimSpace(line)
	base, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	if tokenURL != string(base)+"/token" || !strings.HasPrefix(tokenURL, "http://127.0.0.1:") {
		t.Fatalf("stdout %q, ready file %q", line, base)
	}

	body := url.Values{"grant_type": {"password"}, "username": {"u"}, "password": {"pw+%"}, "scope": {"api offline_access"}}
	req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(body.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("0oatest:se+cr%et")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		ExpiresIn    int    `json:"expires_in"`
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || tok.ExpiresIn != 90 || tok.RefreshToken == "" {
		t.Fatalf("grant: %d %+v %v", resp.StatusCode, tok, err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second): // failure guard only
		t.Fatal("run did not return after cancellation")
	}
	if _, err := os.Stat(ready); !os.IsNotExist(err) {
		t.Errorf("ready file left behind: %v", err)
	}
	for _, secret := range []string{"se+cr%et", "pw+%", tok.AccessToken, tok.RefreshToken} {
		if strings.Contains(stderr.String()+line, secret) {
			t.Errorf("output contains a secret: %s", stderr.String())
		}
	}
}

func TestLegacyFlag(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-addr", "127.0.0.1:0", "-legacy"}, outW, io.Discard)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, outR)
	body := url.Values{"grant_type": {"password"}, "username": {demoUsername}, "password": {demoPassword}, "scope": {"api offline_access"}}
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSpace(line), strings.NewReader(body.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(demoClientID, demoClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]any
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || tok["refresh_token"] != nil || tok["scope"] != "api" {
		t.Fatalf("grant: %d %v %v", resp.StatusCode, tok, err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// With -lockout-after, refused password grants lock the user: the right
// password is refused from then on. -latency holds every answer back.
func TestLockoutAndLatencyFlags(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-addr", "127.0.0.1:0", "-lockout-after", "2", "-latency", "100ms"}, outW, io.Discard)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, outR)
	grant := func(password string) int {
		body := url.Values{"grant_type": {"password"}, "username": {demoUsername}, "password": {password}, "scope": {"api"}}
		req, _ := http.NewRequest(http.MethodPost, strings.TrimSpace(line), strings.NewReader(body.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(demoClientID, demoClientSecret)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
			t.Errorf("answered after %s, before -latency", elapsed)
		}
		return resp.StatusCode
	}
	if got := grant(demoPassword); got != http.StatusOK {
		t.Fatalf("right password: %d", got)
	}
	for range 2 {
		if got := grant("wrong"); got != http.StatusBadRequest {
			t.Fatalf("wrong password: %d", got)
		}
	}
	if got := grant(demoPassword); got != http.StatusBadRequest {
		t.Fatalf("a locked user was let in: %d", got)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-no-such-flag"},
		{"extra"},
		{"-token-lifetime", "-1s"},
		{"-latency", "-1s"},
		{"-lockout-after", "-1"},
		{"-password", ""},
		{"-addr", "nonsense"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

func TestParseAPIKey(t *testing.T) {
	t.Parallel()
	// Only the secret may hold colons: the last colon starts the scopes.
	k, err := parseAPIKey("0oakey:se:cr+et:assets.read,sites")
	if err != nil || k.ClientID != "0oakey" || k.ClientSecret != "se:cr+et" || strings.Join(k.AllowedScopes, " ") != "assets.read sites" {
		t.Fatalf("got %+v, %v", k, err)
	}
	for _, bad := range []string{"", "0oakey", "0oakey:secret", ":secret:sites", "0oakey::sites", "0oakey:secret:", "0oakey:secret:a,,b", "0oakey:secret:a b"} {
		if k, err := parseAPIKey(bad); err == nil {
			t.Errorf("parseAPIKey(%q) = %+v", bad, k)
		}
	}
}

func TestParseApp(t *testing.T) {
	t.Parallel()
	a, err := parseApp("0oaapp:s:e:c:acct-1:asset.read,fleet.read")
	if err != nil || a.ClientID != "0oaapp" || a.ClientSecret != "s:e:c" || a.AccountID != "acct-1" || strings.Join(a.Scopes, " ") != "asset.read fleet.read" {
		t.Fatalf("got %+v, %v", a, err)
	}
	for _, bad := range []string{"", "0oaapp:secret:scopes", "0oaapp:secret::scopes", "0oaapp::acct:scopes", ":s:acct:scopes", "0oaapp:s:acct:"} {
		if a, err := parseApp(bad); err == nil {
			t.Errorf("parseApp(%q) = %+v", bad, a)
		}
	}
}

func TestRunWithAPIKeysAndApps(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr lockedBuilder
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{
			"-addr", "127.0.0.1:0", "-api-key-token-lifetime", "60s", "-app-token-lifetime", "120s",
			"-api-key", "0oakey1:key-secret-1:assets.read,sites",
			"-api-key", "0oakey2:key-secret-2:alerts.read",
			"-app", "0oaapp1:app-secret-1:acct-7:fleet.read",
		}, outW, &stderr)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, outR)
	base := strings.TrimSuffix(strings.TrimSpace(line), "/token")

	grant := func(path, id, secret, scope string) (int, map[string]any) {
		t.Helper()
		body := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {scope}}
		resp, err := http.Post(base+path, "application/x-www-form-urlencoded", strings.NewReader(body.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tok map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, tok
	}
	if status, tok := grant("/token/v2", "0oakey1", "key-secret-1", "sites assets.read"); status != 200 || tok["expires_in"] != float64(60) || tok["scope"] != "sites assets.read" {
		t.Errorf("API key 1: %d %v", status, tok)
	}
	if status, tok := grant("/token/v2", "0oakey2", "key-secret-2", "alerts.read"); status != 200 {
		t.Errorf("API key 2: %d %v", status, tok)
	}
	if status, tok := grant("/token/v2", "0oakey2", "key-secret-2", "sites"); status != 400 || tok["error"] != "invalid_scope" {
		t.Errorf("API key 2 beyond its scopes: %d %v", status, tok)
	}
	if status, tok := grant("/apptoken", "0oaapp1", "app-secret-1", "fleet.read"); status != 200 || tok["expires_in"] != float64(120) {
		t.Errorf("app: %d %v", status, tok)
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	out := stderr.String()
	for _, want := range []string{"API key 0oakey1", "assets.read sites", "API key 0oakey2", "app client 0oaapp1 of account acct-7", base + "/token/v2", base + "/apptoken"} {
		if !strings.Contains(out, want) {
			t.Errorf("startup output lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"key-secret-1", "key-secret-2", "app-secret-1"} {
		if strings.Contains(out+line, secret) {
			t.Errorf("output contains a secret:\n%s", out)
		}
	}
}

// lockedBuilder lets the test read stderr while run may still write to it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestBadClientFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-api-key", "0oakey"},
		{"-app", "0oaapp:secret:scopes"},
		{"-api-key-token-lifetime", "-1s"},
		{"-app-token-lifetime", "-1s"},
		{"-api-key", demoClientID + ":secret:sites"},
		{"-api-key", "0oadup:a:sites", "-app", "0oadup:b:acct:sites"},
		{"-api-key", "0oadup:a:sites", "-api-key", "0oadup:b:sites"},
	} {
		if err := run(context.Background(), append([]string{"-addr", "127.0.0.1:0"}, args...), io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

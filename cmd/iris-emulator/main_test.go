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
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
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
	err := run(context.Background(), []string{"-addr", "0.0.0.0:0"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-allow-remote") {
		t.Fatalf("run: %v", err)
	}
}

func TestRun(t *testing.T) {
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

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-no-such-flag"},
		{"extra"},
		{"-token-lifetime", "-1s"},
		{"-password", ""},
		{"-addr", "nonsense"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

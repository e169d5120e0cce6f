// Command iris-emulator serves the iristest emulator of the Trackunit IRIS
// OAuth authorization server, for scripts and manual testing against a
// running Vault. It speaks the same strict protocol as the test package:
// Basic authentication over the raw client_id:client_secret pair, form bodies
// only, single-use refresh tokens.
//
// Besides the API user it can serve API keys at /token/v2 (-api-key) and IrisX
// app installations at /apptoken (-app), each flag repeatable.
//
// It prints the token URL on stdout once listening and never logs secrets or
// tokens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"vault-plugin-secrets-iris/iristest"
)

// The defaults are an obviously fake API user, so that the emulator works
// out of the box and nobody mistakes its credentials for real ones.
const (
	demoClientID     = "0oademo0000000000000"
	demoClientSecret = "demo-client-secret-NOT-A-REAL-SECRET"
	demoUsername     = "demo-api-user"
	demoPassword     = "demo-password-NOT-A-REAL-SECRET"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// A second signal during shutdown then kills the process as usual.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "iris-emulator:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage error")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iris-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8399", "listen `host:port`; port 0 picks a free port")
	allowRemote := fs.Bool("allow-remote", false, "allow a non-loopback listen address")
	clientID := fs.String("client-id", demoClientID, "OAuth client ID of the API user")
	clientSecret := fs.String("client-secret", demoClientSecret, "OAuth client secret of the API user")
	username := fs.String("username", demoUsername, "API user name")
	password := fs.String("password", demoPassword, "API user password")
	lifetime := fs.Duration("token-lifetime", iristest.DefaultTokenLifetime, "access token lifetime at /token (expires_in, whole seconds)")
	keyLifetime := fs.Duration("api-key-token-lifetime", iristest.DefaultAPIKeyTokenLifetime, "access token lifetime at /token/v2")
	appLifetime := fs.Duration("app-token-lifetime", iristest.DefaultAppTokenLifetime, "access token lifetime at /apptoken")
	var keys []iristest.APIKey
	fs.Func("api-key", "add an API key `client_id:client_secret:scope1,scope2` served at /token/v2 (repeatable; only the secret may hold colons)", func(v string) error {
		k, err := parseAPIKey(v)
		keys = append(keys, k)
		return err
	})
	var apps []iristest.AppInstallation
	fs.Func("app", "add an app installation `client_id:client_secret:account_id:scope1,scope2` served at /apptoken (repeatable; only the secret may hold colons)", func(v string) error {
		a, err := parseApp(v)
		apps = append(apps, a)
		return err
	})
	latency := fs.Duration("latency", 0, "hold every token endpoint answer back this long, as a slow IRIS would")
	lockoutAfter := fs.Int("lockout-after", 0, "lock a user after this many consecutive refused password grants, as an Okta lockout policy would (0: never)")
	legacy := fs.Bool("legacy", false, "emulate an API user that never gets refresh tokens (Trackunit documented this for API users created before 2025 until August 2025)")
	readyFile := fs.String("ready-file", "", "write the base URL to this `file` once listening (removed on exit)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "iris-emulator: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if *lifetime < 0 || *keyLifetime < 0 || *appLifetime < 0 {
		return errors.New("token lifetimes must not be negative")
	}
	if *latency < 0 || *lockoutAfter < 0 {
		return errors.New("-latency and -lockout-after must not be negative")
	}
	if *clientID == "" || *clientSecret == "" || *username == "" || *password == "" {
		return errors.New("-client-id, -client-secret, -username and -password must not be empty")
	}
	if !*allowRemote {
		if err := checkLoopback(*addr); err != nil {
			return err
		}
	}

	emu := iristest.NewUnstartedServer(iristest.User{
		ClientID:        *clientID,
		ClientSecret:    *clientSecret,
		Username:        *username,
		Password:        *password,
		NoRefreshTokens: *legacy,
	})
	emu.SetTokenLifetime(*lifetime)
	emu.SetAPIKeyTokenLifetime(*keyLifetime)
	emu.SetAppTokenLifetime(*appLifetime)
	emu.SetLatency(*latency)
	emu.SetLockoutThreshold(*lockoutAfter)
	if err := addClients(emu, *clientID, keys, apps); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// A host name such as "localhost" passed the check above by name; what
	// counts is the address actually bound.
	if tcp, ok := ln.Addr().(*net.TCPAddr); !*allowRemote && (!ok || !tcp.IP.IsLoopback()) {
		ln.Close()
		return fmt.Errorf("refusing to serve on non-loopback address %s (use -allow-remote)", ln.Addr())
	}
	base := "http://" + ln.Addr().String()

	srv := &http.Server{
		Handler:           emu.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(stderr, "iris-emulator: ", 0),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	if *readyFile != "" {
		if err := writeFileAtomic(*readyFile, base); err != nil {
			emu.Close()
			srv.Close()
			return fmt.Errorf("writing ready file: %w", err)
		}
		defer os.Remove(*readyFile)
	}
	fmt.Fprintln(stdout, base+"/token")
	fmt.Fprintf(stderr, "iris-emulator: client %s, user %s, token lifetime %s, refresh tokens %t\n",
		*clientID, *username, lifetime.Truncate(time.Second), !*legacy)
	if *latency > 0 || *lockoutAfter > 0 {
		fmt.Fprintf(stderr, "iris-emulator: latency %s, lockout after %d refusals (0: never)\n", *latency, *lockoutAfter)
	}
	for _, k := range keys {
		fmt.Fprintf(stderr, "iris-emulator: API key %s at %s/token/v2, scopes %s, token lifetime %s\n",
			k.ClientID, base, strings.Join(k.AllowedScopes, " "), keyLifetime.Truncate(time.Second))
	}
	for _, a := range apps {
		fmt.Fprintf(stderr, "iris-emulator: app client %s of account %s at %s/apptoken, scopes %s, token lifetime %s\n",
			a.ClientID, a.AccountID, base, strings.Join(a.Scopes, " "), appLifetime.Truncate(time.Second))
	}

	select {
	case err := <-serveErr:
		emu.Close()
		return err
	case <-ctx.Done():
	}
	// Close first: Shutdown waits for every request, including any the
	// emulator might be holding.
	emu.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// parseAPIKey reads client_id:client_secret:scopes. The secret is everything
// between the first and the last colon, so it may hold colons itself; client
// IDs and scopes cannot.
func parseAPIKey(v string) (iristest.APIKey, error) {
	id, rest, _ := strings.Cut(v, ":")
	i := strings.LastIndex(rest, ":")
	if i < 0 {
		return iristest.APIKey{}, errors.New("want client_id:client_secret:scope1,scope2")
	}
	scopes, err := parseScopes(rest[i+1:])
	k := iristest.APIKey{ClientID: id, ClientSecret: rest[:i], AllowedScopes: scopes}
	if err == nil && (k.ClientID == "" || k.ClientSecret == "") {
		err = errors.New("client_id and client_secret must not be empty")
	}
	return k, err
}

// parseApp reads client_id:client_secret:account_id:scopes; as in parseAPIKey
// only the secret may hold colons.
func parseApp(v string) (iristest.AppInstallation, error) {
	id, rest, _ := strings.Cut(v, ":")
	i := strings.LastIndex(rest, ":")
	j := strings.LastIndex(rest[:max(i, 0)], ":")
	if j < 0 {
		return iristest.AppInstallation{}, errors.New("want client_id:client_secret:account_id:scope1,scope2")
	}
	scopes, err := parseScopes(rest[i+1:])
	a := iristest.AppInstallation{ClientID: id, ClientSecret: rest[:j], AccountID: rest[j+1 : i], Scopes: scopes}
	if err == nil && (a.ClientID == "" || a.ClientSecret == "" || a.AccountID == "") {
		err = errors.New("client_id, client_secret and account_id must not be empty")
	}
	return a, err
}

func parseScopes(list string) ([]string, error) {
	scopes := strings.Split(list, ",")
	for _, sc := range scopes {
		if sc == "" || strings.ContainsAny(sc, " \t") {
			return nil, fmt.Errorf("invalid scope list %q: want scope1,scope2", list)
		}
	}
	return scopes, nil
}

// addClients adds API keys and apps, turning the emulator's panic on a
// client ID used twice into an error for the command line.
func addClients(emu *iristest.Server, userClientID string, keys []iristest.APIKey, apps []iristest.AppInstallation) error {
	seen := map[string]bool{userClientID: true}
	for _, k := range keys {
		if seen[k.ClientID] {
			return fmt.Errorf("client ID %s is used twice", k.ClientID)
		}
		seen[k.ClientID] = true
		emu.AddAPIKey(k)
	}
	for _, a := range apps {
		if seen[a.ClientID] {
			return fmt.Errorf("client ID %s is used twice", a.ClientID)
		}
		seen[a.ClientID] = true
		emu.AddApp(a)
	}
	return nil
}

// checkLoopback refuses listen addresses reachable from other hosts: the
// emulator hands out tokens to anyone who knows fake credentials.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid -addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing to listen on %q: not a loopback address (use -allow-remote)", addr)
}

// writeFileAtomic makes sure a script polling for the file never reads it
// half written.
func writeFileAtomic(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".iris-emulator-ready-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Command iris-emulator serves the iristest emulator of the Trackunit IRIS
// OAuth authorization server, for scripts and manual testing against a
// running Vault. It speaks the same strict protocol as the test package:
// Basic authentication over the raw client_id:client_secret pair, form bodies
// only, single-use refresh tokens.
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
	lifetime := fs.Duration("token-lifetime", 3600*time.Second, "access token lifetime (expires_in, whole seconds)")
	legacy := fs.Bool("legacy", false, "emulate an API user created before 2025, which never gets refresh tokens")
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
	if *lifetime < 0 {
		return errors.New("-token-lifetime must not be negative")
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

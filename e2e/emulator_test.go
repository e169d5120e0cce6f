//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"vault-plugin-secrets-iris/iristest"
)

// emulator is an in-process IRIS emulator with one API user, served through
// a handler that notes every token it issues: the emulator's own request log
// shows refresh tokens only when they are sent back, and the leak check needs
// every one ever issued.
type emulator struct {
	*iristest.Server
	User iristest.User

	ts *httptest.Server

	mu     sync.Mutex
	issued []issuedTokens
}

// issuedTokens is one successful /token answer.
type issuedTokens struct {
	GrantType    string
	AccessToken  string
	RefreshToken string
}

type emulatorOption func(*iristest.User)

// legacyUser is an API user created before 2025: no refresh tokens.
func legacyUser(u *iristest.User) { u.NoRefreshTokens = true }

// newEmulator starts an emulator whose user has fresh random credentials,
// all registered with rec as secrets. Its client secret and password hold
// characters that form-encoding would change, so that a client encoding the
// Basic header the RFC 6749 way instead of the raw way Trackunit documents
// fails against the strict emulator.
func newEmulator(t testing.TB, rec *recorder, lifetime time.Duration, opts ...emulatorOption) *emulator {
	t.Helper()
	user := iristest.User{
		ClientID:     "0oae2e" + randomHex(7),
		ClientSecret: "cs+/%=" + randomHex(20),
		Username:     "e2e-user-" + randomHex(4),
		Password:     "pw+&%~" + randomHex(20),
	}
	for _, o := range opts {
		o(&user)
	}
	rec.addSecret("client secret", user.ClientSecret)
	rec.addSecret("password", user.Password)
	rec.addSecret("Basic credentials", base64.StdEncoding.EncodeToString([]byte(user.ClientID+":"+user.ClientSecret)))

	srv := iristest.NewUnstartedServer(user)
	srv.SetTokenLifetime(lifetime)
	e := &emulator{Server: srv, User: user}
	e.ts = httptest.NewServer(e.recording(srv.Handler(), rec))
	srv.URL = e.ts.URL
	srv.TokenURL = e.ts.URL + "/token"
	srv.RevocationURL = e.ts.URL + "/revoke"
	srv.IntrospectionURL = e.ts.URL + "/introspect"
	t.Cleanup(e.Close)
	return e
}

// Close takes the emulator off the network, as an IRIS outage would.
func (e *emulator) Close() {
	// The emulator's Close releases requests held by faults first; the
	// listener's Close then waits for them.
	e.Server.Close()
	e.ts.Close()
}

func (e *emulator) recording(next http.Handler, rec *recorder) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/token") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))

		cw := &capturingWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(cw, r)
		if cw.status != http.StatusOK {
			return
		}
		var tok struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal(cw.body.Bytes(), &tok) != nil {
			return
		}
		rec.addSecret("refresh token", tok.RefreshToken)
		rec.addLogSecret("access token", tok.AccessToken)
		e.mu.Lock()
		e.issued = append(e.issued, issuedTokens{form.Get("grant_type"), tok.AccessToken, tok.RefreshToken})
		e.mu.Unlock()
	})
}

type capturingWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *capturingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *capturingWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// Issued returns every successful token answer so far, oldest first.
func (e *emulator) Issued() []issuedTokens {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]issuedTokens(nil), e.issued...)
}

// issuedFor finds the answer that carried accessToken.
func (e *emulator) issuedFor(t testing.TB, accessToken string) issuedTokens {
	t.Helper()
	for _, it := range e.Issued() {
		if it.AccessToken == accessToken {
			return it
		}
	}
	t.Fatalf("the emulator never issued the access token Vault returned")
	return issuedTokens{}
}

// refreshRequests are the refresh grants the emulator received, successful
// or not.
func (e *emulator) refreshRequests() []iristest.Request {
	var out []iristest.Request
	for _, r := range e.Requests() {
		if r.GrantType == "refresh_token" {
			out = append(out, r)
		}
	}
	return out
}

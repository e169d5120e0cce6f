//go:build e2e

package e2e

import (
	"encoding/base64"
	"testing"
	"time"

	"vault-plugin-secrets-iris/iristest"
)

// emulator is an in-process IRIS emulator with one API user. The emulator
// keeps a record of every token it issues (iristest.Server.Issued), answered
// or lost, and every one of them is registered with the test's recorder as a
// secret: refresh tokens must appear nowhere, access tokens in no log.
type emulator struct {
	*iristest.Server
	User iristest.User
}

type emulatorOption func(*iristest.User)

// legacyUser is an API user that gets no refresh tokens.
func legacyUser(u *iristest.User) { u.NoRefreshTokens = true }

// sameUser gives the emulator the API user of another one, so that two
// token URLs accept the same credentials.
func sameUser(other iristest.User) emulatorOption {
	return func(u *iristest.User) { *u = other }
}

// newEmulator starts an emulator whose user has fresh random credentials,
// all registered with rec as secrets. Its client secret and password hold
// characters that form-encoding would change, so that a client encoding the
// Basic header the RFC 6749 way instead of the raw way Trackunit documents
// fails against the strict emulator.
func newEmulator(t testing.TB, rec *recorder, lifetime time.Duration, opts ...emulatorOption) *emulator {
	t.Helper()
	user := newE2EUser("e2e-user-")
	for _, o := range opts {
		o(&user)
	}
	rec.addUserSecrets(user)

	srv := iristest.NewUnstartedServer(user)
	srv.SetTokenLifetime(lifetime)
	srv.Start()
	e := &emulator{Server: srv, User: user}
	// Registered when the check runs, so that tokens issued up to the very
	// end (a background refresh, a revocation's fallback) are covered too.
	rec.addSecretSource(e.issuedSecrets)
	t.Cleanup(e.Close)
	return e
}

// issuedSecrets registers every token the emulator ever issued with rec.
func (e *emulator) issuedSecrets(rec *recorder) {
	for _, is := range e.Issued() {
		rec.addSecret("refresh token", is.RefreshToken)
		rec.addLogSecret("access token", is.AccessToken)
	}
}

// issuedFor finds the answer that carried token, an access or a refresh
// token; the test fails if the emulator never issued it.
func (e *emulator) issuedFor(t testing.TB, token string) iristest.Issuance {
	t.Helper()
	is, ok := e.IssuanceOf(token)
	if !ok {
		t.Fatalf("the emulator never issued the token Vault returned")
	}
	return is
}

// refreshRequests are the refresh grants the emulator received, successful
// or not.
func (e *emulator) refreshRequests() []iristest.Request {
	return e.requestsOf("refresh_token")
}

// requestsOf are the requests of one grant type the emulator received,
// successful or not.
func (e *emulator) requestsOf(grantType string) []iristest.Request {
	var out []iristest.Request
	for _, r := range e.Requests() {
		if r.GrantType == grantType {
			out = append(out, r)
		}
	}
	return out
}

// newE2EUser is an API user with random, distinctive secrets (characters
// that need escaping in every encoding), so that the leak checks can find
// them anywhere.
func newE2EUser(usernamePrefix string) iristest.User {
	return iristest.User{
		ClientID:     "0oae2e" + randomHex(7),
		ClientSecret: "cs+/%=" + randomHex(20),
		Username:     usernamePrefix + randomHex(4),
		Password:     "pw+&%~" + randomHex(20),
	}
}

// addUserSecrets makes the leak check look for user's secrets in every form
// they are sent in.
func (r *recorder) addUserSecrets(user iristest.User) {
	r.addSecret("client secret", user.ClientSecret)
	r.addSecret("password", user.Password)
	r.addSecret("Basic credentials", base64.StdEncoding.EncodeToString([]byte(user.ClientID+":"+user.ClientSecret)))
}

// Package iristest provides an in-process emulator of the Trackunit IRIS OAuth
// 2.0 authorization server, in the manner of net/http/httptest.
//
// It serves the three token endpoints Trackunit documents: /token for API
// users (password and refresh token grants), /token/v2 for API keys and
// /apptoken for IrisX app installations (both client credentials grants,
// never with refresh tokens).
//
// The emulator is deliberately stricter than the real server is known to be,
// so that a client passing against it speaks the documented protocol and not
// merely something a lenient server happens to accept:
//
//   - On /token, client authentication is HTTP Basic over the raw
//     "client_id:client_secret" pair, as Trackunit documents it. The RFC 6749
//     §2.3.1 form, which form-escapes both parts before base64, is rejected
//     whenever it differs from the raw pair (secrets containing '+', '%', ' '
//     and the like), and so are client credentials in the body.
//   - On /token/v2 and /apptoken it is the other way round: client_id and
//     client_secret go in the body, and any Authorization header is refused
//     with 401 invalid_client. The scope parameter is required and must be a
//     subset of the key's allowed scopes or the app manifest's scopes.
//   - Everywhere, parameters in the query string, repeated parameters and
//     any content type other than application/x-www-form-urlencoded are
//     rejected. Client IDs are unique across API users, API keys and apps;
//     a client may use only its own token endpoint.
//   - Refresh tokens are single use; every reuse is rejected and counted in
//     Stats.RefreshReuse, because a client that reuses one has lost track of
//     the rotation.
//   - Optionally (SetLockoutThreshold), repeated wrong passwords lock an API
//     user, as an Okta password policy would.
//
// Every token issued is kept on record (Issued, IssuanceOf, OwnerOf), so that
// tests can attribute tokens without wrapping the handler.
//
// The real server documents neither revocation nor introspection; the
// emulator offers RFC 7009 revocation at /revoke and RFC 7662 style
// introspection at /introspect so that tests can observe what a client did.
// Both take any client's credentials in a Basic header.
package iristest

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// User is one IRIS API user together with the OAuth client it was issued with.
type User struct {
	ClientID, ClientSecret, Username, Password string
	// NoRefreshTokens marks an API user that gets no refresh tokens,
	// whatever scope it asks for: Trackunit documented this for API users
	// created before 2025 until August 2025, and a client must still cope.
	NoRefreshTokens bool
}

// Stats counts what the emulator saw since it started or since ResetStats.
type Stats struct {
	PasswordGrants, RefreshGrants int // successful grants at /token
	APIKeyGrants                  int // successful grants at /token/v2
	AppTokenGrants                int // successful grants at /apptoken
	// Rejected counts answers carrying an OAuth error on any endpoint, so a
	// test can assert that a client never sent a malformed request.
	Rejected int
	// RefreshReuse counts attempts to use a refresh token that had already
	// been used (rotated away).
	RefreshReuse int
	// Revocations counts successful /revoke requests, including those for
	// unknown tokens, which RFC 7009 answers with 200 as well.
	Revocations int
	// Requests counts every request to a token endpoint (/token, /token/v2
	// and /apptoken), faulted ones included.
	Requests int
	// InFlight is how many token endpoint requests are being handled now,
	// and MaxInFlight the most there were at once, so that tests can bound
	// a client's concurrency.
	InFlight, MaxInFlight int
}

// Request is one request to a token endpoint as received. It never holds a
// password or client secret.
type Request struct {
	// Endpoint is the path requested: "/token", "/token/v2" or "/apptoken".
	Endpoint string
	// ClientID comes from the Basic header when there is one, else from the
	// client_id body parameter (as /token/v2 and /apptoken expect).
	GrantType, ClientID, Username, Scope, RefreshToken string
	// HeaderOK reports whether the request carried a Basic header with the
	// raw credentials of a known API user's client at the time it arrived;
	// it is always false for a well-formed /token/v2 or /apptoken request.
	HeaderOK bool
	// Status is the HTTP status sent back, or 0 while the request is still
	// being handled or when no answer was sent (client gone, server closed).
	Status int
	Time   time.Time
}

// Server is a running (or not yet started) IRIS authorization server emulator.
type Server struct {
	URL              string // base URL, e.g. http://127.0.0.1:port, set by Start
	TokenURL         string // URL + "/token"
	TokenV2URL       string // URL + "/token/v2", for API keys
	AppTokenURL      string // URL + "/apptoken", for IrisX app installations
	RevocationURL    string // URL + "/revoke"
	IntrospectionURL string // URL + "/introspect"

	handler   http.Handler
	ts        *httptest.Server
	done      chan struct{} // closed by Close, releases requests held by faults
	closeOnce sync.Once

	// tokenDone, if set, is called when a token endpoint request has been
	// handled; tests use it to wait for a handler without sleeping.
	tokenDone func(*Request)

	mu          sync.Mutex
	users       map[string]User              // by username
	userClients map[string]string            // client ID → client secret, derived from users
	ccClients   map[string]*credentialClient // API keys and app installations by client ID
	lifetimes   map[string]time.Duration     // by token endpoint path
	now         func() time.Time
	faults      []Fault
	sticky      *Fault
	latency     time.Duration
	override    func(http.ResponseWriter, *http.Request) bool
	access      map[string]*accessToken
	refresh     map[string]*refreshToken
	stats       Stats
	requests    []*Request
	issued      []Issuance
	issuedIndex map[string]int // access or refresh token → index in issued
	lockout     lockout
	// ccRefreshTokens makes client credentials answers carry a refresh
	// token (SetClientCredentialsRefreshTokens).
	ccRefreshTokens bool
}

// grant is one successful password or client credentials grant and every
// token derived from it by refreshing; revoking a refresh token revokes the
// whole grant (RFC 7009 §2.1).
type grant struct {
	endpoint           string // the token endpoint path that made the grant
	username, clientID string // username is empty outside /token
	accountID          string // app installations only
	scope              []string
	revoked            bool
}

type accessToken struct {
	g       *grant
	scope   []string
	issued  time.Time
	expires time.Time
	revoked bool
}

type refreshToken struct {
	g       *grant
	used    bool
	revoked bool
}

// The paths of the token endpoints.
const (
	tokenPath       = "/token"
	apiKeyTokenPath = "/token/v2"
	appTokenPath    = "/apptoken"
)

// Default access token lifetimes (expires_in) as Trackunit documents them.
const (
	DefaultTokenLifetime       = 3600 * time.Second // /token, API users
	DefaultAPIKeyTokenLifetime = 1200 * time.Second // /token/v2, API keys
	DefaultAppTokenLifetime    = 3600 * time.Second // /apptoken, app installations
)

// NewServer starts an emulator on a random loopback port. The caller should
// Close it when finished.
func NewServer(users ...User) *Server {
	s := NewUnstartedServer(users...)
	s.Start()
	return s
}

// NewUnstartedServer returns an emulator that is not yet listening: call Start,
// or serve Handler on a listener of your own.
func NewUnstartedServer(users ...User) *Server {
	s := &Server{
		done:        make(chan struct{}),
		users:       make(map[string]User),
		userClients: make(map[string]string),
		ccClients:   make(map[string]*credentialClient),
		lifetimes: map[string]time.Duration{
			tokenPath:       DefaultTokenLifetime,
			apiKeyTokenPath: DefaultAPIKeyTokenLifetime,
			appTokenPath:    DefaultAppTokenLifetime,
		},
		now:         time.Now,
		access:      make(map[string]*accessToken),
		refresh:     make(map[string]*refreshToken),
		issuedIndex: make(map[string]int),
		lockout:     newLockout(),
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	for _, u := range users {
		s.addUserLocked(u)
	}
	return s
}

// Start starts the server on a random loopback port.
func (s *Server) Start() {
	if s.ts != nil {
		panic("iristest: Server already started")
	}
	// Created here rather than in NewUnstartedServer because httptest binds
	// its listener on creation, and a caller using only Handler needs none.
	s.ts = httptest.NewUnstartedServer(s.handler)
	s.ts.Start()
	s.URL = s.ts.URL
	s.TokenURL = s.URL + tokenPath
	s.TokenV2URL = s.URL + apiKeyTokenPath
	s.AppTokenURL = s.URL + appTokenPath
	s.RevocationURL = s.URL + "/revoke"
	s.IntrospectionURL = s.URL + "/introspect"
}

// Close releases every request held by a fault, then shuts the server down and
// waits for outstanding requests to finish. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.ts != nil {
			s.ts.Close()
		}
	})
}

// Handler returns the emulator's HTTP handler, which serves /token,
// /token/v2, /apptoken, /revoke and /introspect.
func (s *Server) Handler() http.Handler { return s.handler }

// SetTokenLifetime sets expires_in for future grants at /token (default
// DefaultTokenLifetime). It is truncated to whole seconds; a negative value
// counts as zero (tokens born expired).
func (s *Server) SetTokenLifetime(d time.Duration) { s.setLifetime(tokenPath, d) }

// SetAPIKeyTokenLifetime is SetTokenLifetime for /token/v2 (default
// DefaultAPIKeyTokenLifetime).
func (s *Server) SetAPIKeyTokenLifetime(d time.Duration) { s.setLifetime(apiKeyTokenPath, d) }

// SetAppTokenLifetime is SetTokenLifetime for /apptoken (default
// DefaultAppTokenLifetime).
func (s *Server) SetAppTokenLifetime(d time.Duration) { s.setLifetime(appTokenPath, d) }

func (s *Server) setLifetime(endpoint string, d time.Duration) {
	d = d.Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetimes[endpoint] = max(d, 0)
}

// SetClock replaces the clock used for issue and expiry times; nil restores
// time.Now. Delays of faults always use real time.
func (s *Server) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ResetStats zeroes the counters (RefusedAttempts included) and forgets the
// request log. It keeps the record of issued tokens, which leak checks need
// whole, and the lockout state, which belongs to the accounts.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Requests still being handled will count themselves out.
	s.stats = Stats{InFlight: s.stats.InFlight}
	s.requests = nil
	clear(s.lockout.refused)
}

// Requests returns a copy of the token endpoint request log, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = *r
	}
	return out
}

// Introspect reports whether accessToken is an access token that exists, is
// not revoked and has not expired by the emulator's clock, and when it
// expires. expiresAt is zero for an unknown token.
func (s *Server) Introspect(accessToken string) (active bool, expiresAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.access[accessToken]
	if t == nil {
		return false, time.Time{}
	}
	return s.activeLocked(t), t.expires
}

func (s *Server) activeLocked(t *accessToken) bool {
	return !t.revoked && !t.g.revoked && s.now().Before(t.expires)
}

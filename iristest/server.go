// Package iristest provides an in-process emulator of the Trackunit IRIS OAuth
// 2.0 authorization server, in the manner of net/http/httptest.
//
// The emulator is deliberately stricter than the real server is known to be,
// so that a client passing against it speaks the documented protocol and not
// merely something a lenient server happens to accept:
//
//   - Client authentication is HTTP Basic over the raw "client_id:client_secret"
//     pair, as Trackunit documents it. The RFC 6749 §2.3.1 form, which
//     form-escapes both parts before base64, is rejected whenever it differs
//     from the raw pair (secrets containing '+', '%', ' ' and the like).
//   - Client credentials in the request body, parameters in the query string,
//     repeated parameters and any content type other than
//     application/x-www-form-urlencoded are rejected.
//   - Refresh tokens are single use; every reuse is rejected and counted in
//     Stats.RefreshReuse, because a client that reuses one has lost track of
//     the rotation.
//
// The real server documents neither revocation nor introspection; the
// emulator offers RFC 7009 revocation at /revoke and RFC 7662 style
// introspection at /introspect so that tests can observe what a client did.
package iristest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// User is one IRIS API user together with the OAuth client it was issued with.
type User struct {
	ClientID, ClientSecret, Username, Password string
	// NoRefreshTokens marks an API user created before 2025: IRIS never
	// issues refresh tokens to those, whatever scope they ask for.
	NoRefreshTokens bool
}

// Fault describes an abnormal answer from the token endpoint. Faults are taken
// before any protocol check, so they apply to well-formed and malformed
// requests alike.
type Fault struct {
	// Status is the HTTP status to answer. Zero means "answer normally",
	// which together with Delay or AfterHandling gives a slow but otherwise
	// correct response.
	Status      int
	Body        string
	ContentType string
	RetryAfter  string
	// Delay holds the answer back for this long, or until the client gives
	// up or the server is closed, whichever comes first. A very large Delay
	// models a server that hangs.
	Delay time.Duration
	// AfterHandling runs the request through the normal protocol first, so
	// tokens are issued and refresh tokens are consumed, and only then
	// applies Delay and Status: a response lost after the server acted.
	AfterHandling bool
}

// check panics in the test that configured an impossible fault, rather than
// in a handler where net/http would turn it into a dropped connection.
func (f Fault) check() {
	if f.Status != 0 && (f.Status < 200 || f.Status > 999) {
		panic(fmt.Sprintf("iristest: Fault.Status %d is not a final HTTP status", f.Status))
	}
}

// Stats counts what the emulator saw since it started or since ResetStats.
type Stats struct {
	PasswordGrants, RefreshGrants int // successful grants
	// Rejected counts answers carrying an OAuth error on any endpoint, so a
	// test can assert that a client never sent a malformed request.
	Rejected int
	// RefreshReuse counts attempts to use a refresh token that had already
	// been used (rotated away).
	RefreshReuse int
	// Revocations counts successful /revoke requests, including those for
	// unknown tokens, which RFC 7009 answers with 200 as well.
	Revocations int
	// Requests counts every /token request, faulted ones included.
	Requests int
}

// Request is one /token request as received. It never holds a password or
// client secret.
type Request struct {
	GrantType, ClientID, Username, Scope, RefreshToken string
	// HeaderOK reports whether the request carried a Basic header with the
	// raw credentials of a known client at the time it arrived.
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
	RevocationURL    string // URL + "/revoke"
	IntrospectionURL string // URL + "/introspect"

	handler   http.Handler
	ts        *httptest.Server
	done      chan struct{} // closed by Close, releases requests held by faults
	closeOnce sync.Once

	// tokenDone, if set, is called when a /token request has been handled;
	// tests use it to wait for a handler without sleeping.
	tokenDone func(*Request)

	mu       sync.Mutex
	users    map[string]User   // by username
	clients  map[string]string // client ID → client secret
	lifetime time.Duration
	now      func() time.Time
	faults   []Fault
	sticky   *Fault
	override func(http.ResponseWriter, *http.Request) bool
	access   map[string]*accessToken
	refresh  map[string]*refreshToken
	stats    Stats
	requests []*Request
}

// grant is one successful password grant and every token derived from it by
// refreshing; revoking a refresh token revokes the whole grant (RFC 7009 §2.1).
type grant struct {
	username, clientID string
	scope              []string // as granted by the password grant
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

const defaultLifetime = 3600 * time.Second

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
		done:     make(chan struct{}),
		users:    make(map[string]User),
		clients:  make(map[string]string),
		lifetime: defaultLifetime,
		now:      time.Now,
		access:   make(map[string]*accessToken),
		refresh:  make(map[string]*refreshToken),
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
	s.TokenURL = s.URL + "/token"
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

// Handler returns the emulator's HTTP handler, which serves /token, /revoke
// and /introspect.
func (s *Server) Handler() http.Handler { return s.handler }

// AddUser adds u, replacing any user with the same username. The user's client
// secret becomes the secret of its client ID.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addUserLocked(u)
}

func (s *Server) addUserLocked(u User) {
	s.users[u.Username] = u
	s.rebuildClientsLocked()
}

func (s *Server) rebuildClientsLocked() {
	clear(s.clients)
	for _, u := range s.users {
		s.clients[u.ClientID] = u.ClientSecret
	}
}

// RemoveUser deletes a user, as when an admin deletes the API user or rotates
// its password (re-add it with the new one). Every token of the user is
// revoked, so a client cannot carry on with refresh tokens issued under the
// old password. The user's client disappears with its last user.
func (s *Server) RemoveUser(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.users, username)
	s.rebuildClientsLocked()
	s.revokeUserLocked(username)
}

// RevokeAll revokes every access and refresh token of a user, as when an admin
// ends all of its sessions.
func (s *Server) RevokeAll(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeUserLocked(username)
}

func (s *Server) revokeUserLocked(username string) {
	for _, t := range s.refresh {
		if t.g.username == username {
			t.g.revoked = true
		}
	}
	for _, t := range s.access {
		if t.g.username == username {
			t.g.revoked = true
		}
	}
}

// LiveRefreshTokens returns how many refresh tokens of a user could still be
// used: issued, not yet used and not revoked.
func (s *Server) LiveRefreshTokens(username string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.refresh {
		if t.g.username == username && !t.used && !t.revoked && !t.g.revoked {
			n++
		}
	}
	return n
}

// SetTokenLifetime sets expires_in for future grants. It is truncated to whole
// seconds; a negative value counts as zero (tokens born expired).
func (s *Server) SetTokenLifetime(d time.Duration) {
	d = d.Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = max(d, 0)
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

// FailNext queues f for the next n /token requests. Queued faults are used in
// the order they were queued, one per request, before any sticky fault.
func (s *Server) FailNext(n int, f Fault) {
	f.check()
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// SetFault applies f to every /token request that finds no queued fault, until
// SetFault(nil).
func (s *Server) SetFault(f *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == nil {
		s.sticky = nil
		return
	}
	c := *f
	c.check()
	s.sticky = &c
}

// SetResponseOverride installs fn, which sees every /token request (with its
// body intact) before faults and protocol checks. When fn returns true it has
// answered and the emulator does nothing more. nil removes the override.
func (s *Server) SetResponseOverride(fn func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override = fn
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ResetStats zeroes the counters and forgets the request log.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{}
	s.requests = nil
}

// Requests returns a copy of the /token request log, oldest first.
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

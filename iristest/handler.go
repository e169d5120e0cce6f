package iristest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"
)

// maxBodyBytes bounds every request body: OAuth requests are a few hundred
// bytes, and a test server must not be made to buffer arbitrary uploads.
const maxBodyBytes = 64 << 10

const formType = "application/x-www-form-urlencoded"

// knownScopes is also the order in which granted scopes are reported, so the
// scope string of a response does not depend on how the request ordered it.
var knownScopes = []string{"api", "offline_access"}

// oauthParams may each appear at most once (RFC 6749 §3.1, §3.2).
var oauthParams = []string{
	"grant_type", "username", "password", "scope", "refresh_token",
	"client_id", "client_secret", "token", "token_type_hint",
}

type oauthError struct {
	status int
	code   string
	desc   string
}

// The descriptions of credential failures are Okta's, which IRIS appears to
// run on; none of them echoes anything the client sent.
var (
	errInvalidClient  = &oauthError{http.StatusUnauthorized, "invalid_client", "Client authentication failed."}
	errBadCredentials = &oauthError{http.StatusBadRequest, "invalid_grant", "The credentials provided were invalid."}
	errBadRefresh     = &oauthError{http.StatusBadRequest, "invalid_grant", "The refresh token is invalid or expired."}
	errBadScope       = &oauthError{http.StatusBadRequest, "invalid_scope", "The requested scope is invalid, unknown, or malformed."}
	errWideScope      = &oauthError{http.StatusBadRequest, "invalid_scope", "The requested scope exceeds the scope originally granted."}

	errNoGrantType      = invalidRequest("The grant_type parameter is required.")
	errUnsupportedGrant = &oauthError{http.StatusBadRequest, "unsupported_grant_type", "The authorization grant type is not supported."}
)

func invalidRequest(desc string) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_request", desc}
}

type tokenResponse struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
}

type errorResponse struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

type introspectionResponse struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Username  string `json:"username,omitempty"`
	AccountID string `json:"account_id,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case tokenPath:
		s.serveTokenEndpoint(w, r, s.userGrant)
	case apiKeyTokenPath, appTokenPath:
		s.serveTokenEndpoint(w, r, s.clientCredentialsGrant)
	case "/revoke":
		s.serveRevoke(w, r)
	case "/introspect":
		s.serveIntrospect(w, r)
	default:
		http.NotFound(w, r)
	}
}

// grantFunc makes the grant a token request asks for, or says why not.
type grantFunc func(r *http.Request, body []byte, bodyErr error) (*tokenResponse, *oauthError)

// serveTokenEndpoint is what every token endpoint shares: the request log,
// the override, and faults around the endpoint's own grant.
func (s *Server) serveTokenEndpoint(w http.ResponseWriter, r *http.Request, grant grantFunc) {
	body, bodyErr := readBody(w, r)
	rec := s.record(r, body)
	sw := &statusWriter{ResponseWriter: w}
	answered := true
	s.mu.Lock()
	s.stats.InFlight++
	s.stats.MaxInFlight = max(s.stats.MaxInFlight, s.stats.InFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.stats.InFlight--
		if answered {
			rec.Status = sw.status
			if rec.Status == 0 {
				rec.Status = http.StatusOK // what net/http sends for a silent handler
			}
		}
		snapshot := *rec
		s.mu.Unlock()
		if s.tokenDone != nil {
			s.tokenDone(&snapshot)
		}
	}()

	s.mu.Lock()
	override, latency := s.override, s.latency
	s.mu.Unlock()
	if !s.hold(r.Context(), latency) {
		answered = false
		s.abortIfClosed()
		return
	}
	if override != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if override(sw, r) {
			return
		}
	}

	f, faulted := s.takeFault()
	var held *httptest.ResponseRecorder
	var res *tokenResponse
	if faulted && f.AfterHandling {
		held = httptest.NewRecorder()
		res = s.answerToken(held, r, body, bodyErr, grant)
	}
	if faulted {
		if !s.hold(r.Context(), f.Delay) {
			answered = false
			s.abortIfClosed()
			return
		}
		if f.DropConnection {
			answered = false
			panic(http.ErrAbortHandler) // net/http closes the connection unanswered
		}
		if f.Status != 0 {
			writeFault(sw, f)
			return
		}
	}
	if held != nil {
		maps.Copy(sw.Header(), held.Header())
		sw.WriteHeader(held.Code)
		_, _ = sw.Write(held.Body.Bytes())
	} else {
		res = s.answerToken(sw, r, body, bodyErr, grant)
	}
	s.markAnswered(res)
}

// answerToken writes the answer of grant and returns the tokens it carried,
// nil for a refusal.
func (s *Server) answerToken(w http.ResponseWriter, r *http.Request, body []byte, bodyErr error, grant grantFunc) *tokenResponse {
	if r.Method != http.MethodPost {
		s.methodNotAllowed(w)
		return nil
	}
	res, e := grant(r, body, bodyErr)
	if e != nil {
		s.fail(w, e)
		return nil
	}
	writeJSON(w, http.StatusOK, res)
	return res
}

// record logs the request before anything else happens to it, so that faulted
// and malformed requests show up too. Parsing is best effort.
func (s *Server) record(r *http.Request, body []byte) *Request {
	form, _ := url.ParseQuery(string(body))
	id, secret, basicOK := parseBasic(r.Header.Get("Authorization"))
	s.mu.Lock()
	defer s.mu.Unlock()
	req := &Request{
		Endpoint:     r.URL.Path,
		GrantType:    form.Get("grant_type"),
		ClientID:     form.Get("client_id"),
		Username:     form.Get("username"),
		Scope:        form.Get("scope"),
		RefreshToken: form.Get("refresh_token"),
		Time:         s.now(),
	}
	if basicOK {
		req.ClientID = id
		want, known := s.userClients[id]
		req.HeaderOK = known && len(r.Header.Values("Authorization")) == 1 && equal(secret, want)
	}
	s.stats.Requests++
	s.requests = append(s.requests, req)
	return req
}

func (s *Server) takeFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		return f, true
	}
	if s.sticky != nil {
		return *s.sticky, true
	}
	return Fault{}, false
}

// hold waits for d and reports whether it ran out; false means the client went
// away or the server is closing.
func (s *Server) hold(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

// abortIfClosed drops the connection of a held request once Close was called.
// Returning normally would make net/http send an empty 200, which a client
// could mistake for an answer.
func (s *Server) abortIfClosed() {
	select {
	case <-s.done:
		panic(http.ErrAbortHandler)
	default:
	}
}

func writeFault(w http.ResponseWriter, f Fault) {
	h := w.Header()
	if f.ContentType != "" {
		h.Set("Content-Type", f.ContentType)
	}
	if f.RetryAfter != "" {
		h.Set("Retry-After", f.RetryAfter)
	}
	w.WriteHeader(f.Status)
	_, _ = io.WriteString(w, f.Body)
}

func (s *Server) methodNotAllowed(w http.ResponseWriter) {
	w.Header().Set("Allow", http.MethodPost)
	s.fail(w, &oauthError{http.StatusMethodNotAllowed, "invalid_request", "Only POST is allowed."})
}

func (s *Server) fail(w http.ResponseWriter, e *oauthError) {
	s.mu.Lock()
	s.stats.Rejected++
	s.mu.Unlock()
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Basic")
	}
	writeJSON(w, e.status, errorResponse{Error: e.code, ErrorDescription: e.desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain structs of strings and numbers reach here.
		panic("iristest: " + err.Error())
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
}

// statusWriter remembers the status sent, for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets an override use http.ResponseController (flush, hijack,
// deadlines) on the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

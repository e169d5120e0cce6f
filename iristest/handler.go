package iristest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
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
	TokenType string `json:"token_type,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/token":
		s.serveToken(w, r)
	case "/revoke":
		s.serveRevoke(w, r)
	case "/introspect":
		s.serveIntrospect(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	body, bodyErr := readBody(w, r)
	rec := s.record(r, body)
	sw := &statusWriter{ResponseWriter: w}
	answered := true
	defer func() {
		s.mu.Lock()
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
	override := s.override
	s.mu.Unlock()
	if override != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if override(sw, r) {
			return
		}
	}

	f, faulted := s.takeFault()
	switch {
	case !faulted:
		s.handleToken(sw, r, body, bodyErr)
	case !f.AfterHandling:
		if !s.hold(r.Context(), f.Delay) {
			answered = false
			s.abortIfClosed()
			return
		}
		if f.Status == 0 {
			s.handleToken(sw, r, body, bodyErr)
		} else {
			writeFault(sw, f)
		}
	default:
		buf := httptest.NewRecorder()
		s.handleToken(buf, r, body, bodyErr)
		if !s.hold(r.Context(), f.Delay) {
			answered = false
			s.abortIfClosed()
			return
		}
		if f.Status == 0 {
			maps.Copy(sw.Header(), buf.Header())
			sw.WriteHeader(buf.Code)
			_, _ = sw.Write(buf.Body.Bytes())
		} else {
			writeFault(sw, f)
		}
	}
}

// record logs the request before anything else happens to it, so that faulted
// and malformed requests show up too. Parsing is best effort.
func (s *Server) record(r *http.Request, body []byte) *Request {
	form, _ := url.ParseQuery(string(body))
	id, secret, basicOK := parseBasic(r.Header.Get("Authorization"))
	s.mu.Lock()
	defer s.mu.Unlock()
	req := &Request{
		GrantType:    form.Get("grant_type"),
		ClientID:     form.Get("client_id"),
		Username:     form.Get("username"),
		Scope:        form.Get("scope"),
		RefreshToken: form.Get("refresh_token"),
		Time:         s.now(),
	}
	if basicOK {
		req.ClientID = id
		want, known := s.clients[id]
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

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, body []byte, bodyErr error) {
	if r.Method != http.MethodPost {
		s.methodNotAllowed(w)
		return
	}
	form, clientID, e := s.checkRequest(r, body, bodyErr)
	if e != nil {
		s.fail(w, e)
		return
	}
	var res *tokenResponse
	switch form.Get("grant_type") {
	case "password":
		res, e = s.passwordGrant(form, clientID)
	case "refresh_token":
		res, e = s.refreshGrant(form, clientID)
	case "":
		e = invalidRequest("The grant_type parameter is required.")
	default:
		e = &oauthError{http.StatusBadRequest, "unsupported_grant_type", "The authorization grant type is not supported."}
	}
	if e != nil {
		s.fail(w, e)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// checkRequest applies the rules shared by every endpoint: content type, body,
// parameter placement, and client authentication.
func (s *Server) checkRequest(r *http.Request, body []byte, bodyErr error) (url.Values, string, *oauthError) {
	cts := r.Header.Values("Content-Type")
	if len(cts) != 1 {
		return nil, "", invalidRequest("Content-Type must be " + formType + ".")
	}
	mt, params, err := mime.ParseMediaType(cts[0])
	if err != nil || mt != formType {
		return nil, "", invalidRequest("Content-Type must be " + formType + ".")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, "", invalidRequest("The request body must be UTF-8.")
	}
	if bodyErr != nil {
		return nil, "", invalidRequest("The request body is unreadable or too large.")
	}
	if r.URL.RawQuery != "" {
		return nil, "", invalidRequest("Parameters must be sent in the request body, not in the URL.")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, "", invalidRequest("The request body is not valid form encoding.")
	}
	for _, p := range oauthParams {
		if len(form[p]) > 1 {
			return nil, "", invalidRequest("The " + p + " parameter must not be repeated.")
		}
	}
	if form.Has("client_id") || form.Has("client_secret") {
		return nil, "", invalidRequest("Client credentials must be sent in the Authorization header, not in the body.")
	}
	clientID, e := s.authenticate(r)
	if e != nil {
		return nil, "", e
	}
	return form, clientID, nil
}

func (s *Server) authenticate(r *http.Request) (string, *oauthError) {
	hs := r.Header.Values("Authorization")
	switch len(hs) {
	case 0:
		return "", errInvalidClient
	case 1:
	default:
		return "", invalidRequest("Only one Authorization header is allowed.")
	}
	id, secret, ok := parseBasic(hs[0])
	if !ok {
		return "", errInvalidClient
	}
	s.mu.Lock()
	want, known := s.clients[id]
	s.mu.Unlock()
	if !known || !equal(secret, want) {
		return "", errInvalidClient
	}
	return id, nil
}

// parseBasic splits a Basic header into the raw client ID and secret. Unlike
// RFC 6749 §2.3.1, nothing is form-decoded: Trackunit documents base64 of the
// raw pair, and a client that escapes first must fail here.
func parseBasic(h string) (id, secret string, ok bool) {
	scheme, cred, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(cred)
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

func equal(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) passwordGrant(form url.Values, clientID string) (*tokenResponse, *oauthError) {
	username, password := form.Get("username"), form.Get("password")
	if username == "" {
		return nil, invalidRequest("The username parameter is required.")
	}
	if password == "" {
		return nil, invalidRequest("The password parameter is required.")
	}
	scope, e := parseScope(form.Get("scope"))
	if e != nil {
		return nil, e
	}
	if scope == nil {
		scope = []string{"api"}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	// Every mismatch gets the same answer, so that a client cannot tell an
	// unknown user from a wrong password or a user of another client.
	if !ok || u.ClientID != clientID || !equal(password, u.Password) {
		return nil, errBadCredentials
	}
	if u.NoRefreshTokens {
		scope = slices.DeleteFunc(scope, func(sc string) bool { return sc == "offline_access" })
	}
	g := &grant{username: username, clientID: clientID, scope: scope}
	s.stats.PasswordGrants++
	return s.issueLocked(g, scope, !u.NoRefreshTokens), nil
}

func (s *Server) refreshGrant(form url.Values, clientID string) (*tokenResponse, *oauthError) {
	token := form.Get("refresh_token")
	if token == "" {
		return nil, invalidRequest("The refresh_token parameter is required.")
	}
	want, e := parseScope(form.Get("scope"))
	if e != nil {
		return nil, e
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.refresh[token]
	// Another client's token is treated as unknown: it must neither work nor
	// be consumed, and its existence must not leak.
	if t == nil || t.g.clientID != clientID {
		return nil, errBadRefresh
	}
	if t.used {
		s.stats.RefreshReuse++
		return nil, errBadRefresh
	}
	if t.revoked || t.g.revoked {
		return nil, errBadRefresh
	}
	u, ok := s.users[t.g.username]
	if !ok || u.ClientID != clientID {
		return nil, errBadRefresh
	}
	scope := t.g.scope
	if want != nil {
		for _, sc := range want {
			if !slices.Contains(t.g.scope, sc) {
				return nil, errWideScope
			}
		}
		scope = want
	}
	t.used = true
	s.stats.RefreshGrants++
	return s.issueLocked(t.g, scope, !u.NoRefreshTokens), nil
}

// parseScope returns nil for an absent scope. It insists on the RFC 6749 §3.3
// syntax, single spaces between tokens, because a lenient parse would hide a
// client that builds the string wrongly.
func parseScope(raw string) ([]string, *oauthError) {
	if raw == "" {
		return nil, nil
	}
	asked := make(map[string]bool)
	for _, sc := range strings.Split(raw, " ") {
		if !slices.Contains(knownScopes, sc) {
			return nil, errBadScope
		}
		asked[sc] = true
	}
	var out []string
	for _, sc := range knownScopes {
		if asked[sc] {
			out = append(out, sc)
		}
	}
	return out, nil
}

func (s *Server) issueLocked(g *grant, scope []string, refreshable bool) *tokenResponse {
	now := s.now()
	at := newToken("at_")
	s.access[at] = &accessToken{g: g, scope: scope, issued: now, expires: now.Add(s.lifetime)}
	res := &tokenResponse{
		TokenType:   "Bearer",
		ExpiresIn:   int64(s.lifetime / time.Second),
		AccessToken: at,
		Scope:       strings.Join(scope, " "),
	}
	if refreshable && slices.Contains(scope, "offline_access") {
		rt := newToken("rt_")
		s.refresh[rt] = &refreshToken{g: g}
		res.RefreshToken = rt
	}
	return res
}

func newToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails since Go 1.24; it crashes the program instead
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// tokenEndpointRequest checks what /revoke and /introspect share: POST,
// client authentication, and a token parameter. It answers the request
// itself when they are wrong.
func (s *Server) tokenEndpointRequest(w http.ResponseWriter, r *http.Request) (token, clientID string, ok bool) {
	if r.Method != http.MethodPost {
		s.methodNotAllowed(w)
		return "", "", false
	}
	body, bodyErr := readBody(w, r)
	form, clientID, e := s.checkRequest(r, body, bodyErr)
	if e == nil && form.Get("token") == "" {
		e = invalidRequest("The token parameter is required.")
	}
	if e != nil {
		s.fail(w, e)
		return "", "", false
	}
	return form.Get("token"), clientID, true
}

func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	token, clientID, ok := s.tokenEndpointRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	// The hint is only an optimisation in RFC 7009, so both kinds are looked
	// up whatever it says. Tokens of other clients are left alone silently,
	// like unknown ones.
	if t := s.access[token]; t != nil && t.g.clientID == clientID {
		t.revoked = true
	} else if t := s.refresh[token]; t != nil && t.g.clientID == clientID {
		t.revoked = true
		t.g.revoked = true
	}
	s.stats.Revocations++
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	token, clientID, ok := s.tokenEndpointRequest(w, r)
	if !ok {
		return
	}
	var res introspectionResponse
	s.mu.Lock()
	if t := s.access[token]; t != nil && t.g.clientID == clientID && s.activeLocked(t) {
		res = introspectionResponse{
			Active:    true,
			Scope:     strings.Join(t.scope, " "),
			ClientID:  t.g.clientID,
			Username:  t.g.username,
			TokenType: "Bearer",
			Exp:       t.expires.Unix(),
			Iat:       t.issued.Unix(),
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
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

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
	override := s.override
	s.mu.Unlock()
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

// userGrant serves /token: the password and refresh token grants of API
// users.
func (s *Server) userGrant(r *http.Request, body []byte, bodyErr error) (*tokenResponse, *oauthError) {
	form, e := parseForm(r, body, bodyErr)
	if e != nil {
		return nil, e
	}
	clientID, e := s.authenticateBasic(r, form, s.userClientSecret)
	if e != nil {
		return nil, e
	}
	switch form.Get("grant_type") {
	case "password":
		return s.passwordGrant(form, clientID)
	case "refresh_token":
		return s.refreshGrant(form, clientID)
	case "":
		return nil, errNoGrantType
	default:
		return nil, errUnsupportedGrant
	}
}

// parseForm applies the rules every endpoint shares: content type, body, and
// parameter placement and repetition.
func parseForm(r *http.Request, body []byte, bodyErr error) (url.Values, *oauthError) {
	cts := r.Header.Values("Content-Type")
	if len(cts) != 1 {
		return nil, invalidRequest("Content-Type must be " + formType + ".")
	}
	mt, params, err := mime.ParseMediaType(cts[0])
	if err != nil || mt != formType {
		return nil, invalidRequest("Content-Type must be " + formType + ".")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, invalidRequest("The request body must be UTF-8.")
	}
	if bodyErr != nil {
		return nil, invalidRequest("The request body is unreadable or too large.")
	}
	if r.URL.RawQuery != "" {
		return nil, invalidRequest("Parameters must be sent in the request body, not in the URL.")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("The request body is not valid form encoding.")
	}
	for _, p := range oauthParams {
		if len(form[p]) > 1 {
			return nil, invalidRequest("The " + p + " parameter must not be repeated.")
		}
	}
	return form, nil
}

// authenticateBasic authenticates the client of an endpoint that takes
// client credentials only in a Basic header, against the secrets secretOf
// knows.
func (s *Server) authenticateBasic(r *http.Request, form url.Values, secretOf func(clientID string) (string, bool)) (string, *oauthError) {
	if form.Has("client_id") || form.Has("client_secret") {
		return "", invalidRequest("Client credentials must be sent in the Authorization header, not in the body.")
	}
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
	want, known := secretOf(id)
	if !known || !equal(secret, want) {
		return "", errInvalidClient
	}
	return id, nil
}

// userClientSecret knows only API users' clients, the only ones /token
// serves.
func (s *Server) userClientSecret(clientID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	secret, ok := s.userClients[clientID]
	return secret, ok
}

// anyClientSecret knows every client, for /revoke and /introspect.
func (s *Server) anyClientSecret(clientID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientSecretLocked(clientID)
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
	if s.lockout.locked[username] {
		s.lockout.refuse(username, ok)
		return nil, errLocked
	}
	// Every mismatch gets the same answer, so that a client cannot tell an
	// unknown user from a wrong password or a user of another client.
	if !ok || u.ClientID != clientID || !equal(password, u.Password) {
		s.lockout.refuse(username, ok)
		return nil, errBadCredentials
	}
	s.lockout.succeed(username)
	if u.NoRefreshTokens {
		scope = slices.DeleteFunc(scope, func(sc string) bool { return sc == "offline_access" })
	}
	g := &grant{endpoint: tokenPath, username: username, clientID: clientID, scope: scope}
	s.stats.PasswordGrants++
	return s.issueLocked(g, "password", scope, !u.NoRefreshTokens), nil
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
	return s.issueLocked(t.g, "refresh_token", scope, !u.NoRefreshTokens), nil
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

func (s *Server) issueLocked(g *grant, grantType string, scope []string, refreshable bool) *tokenResponse {
	now := s.now()
	lifetime := s.lifetimes[g.endpoint]
	at := newToken("at_")
	s.access[at] = &accessToken{g: g, scope: scope, issued: now, expires: now.Add(lifetime)}
	res := &tokenResponse{
		TokenType:   "Bearer",
		ExpiresIn:   int64(lifetime / time.Second),
		AccessToken: at,
		Scope:       strings.Join(scope, " "),
	}
	if refreshable && slices.Contains(scope, "offline_access") {
		rt := newToken("rt_")
		s.refresh[rt] = &refreshToken{g: g}
		res.RefreshToken = rt
	}
	s.recordIssuanceLocked(Issuance{
		Endpoint:     g.endpoint,
		GrantType:    grantType,
		ClientID:     g.clientID,
		Username:     g.username,
		AccountID:    g.accountID,
		Scope:        res.Scope,
		AccessToken:  res.AccessToken,
		RefreshToken: res.RefreshToken,
		IssuedAt:     now,
		ExpiresAt:    now.Add(lifetime),
	})
	return res
}

func newToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails since Go 1.24; it crashes the program instead
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// tokenEndpointRequest checks what /revoke and /introspect share: POST, the
// form rules, Basic client authentication (for every kind of client, API
// keys and app installations included), and a token parameter. It answers
// the request itself when they are wrong.
func (s *Server) tokenEndpointRequest(w http.ResponseWriter, r *http.Request) (token, clientID string, ok bool) {
	if r.Method != http.MethodPost {
		s.methodNotAllowed(w)
		return "", "", false
	}
	body, bodyErr := readBody(w, r)
	form, e := parseForm(r, body, bodyErr)
	if e == nil {
		clientID, e = s.authenticateBasic(r, form, s.anyClientSecret)
	}
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
			AccountID: t.g.accountID,
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

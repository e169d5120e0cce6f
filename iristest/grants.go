package iristest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The grants of /token: client authentication, the password and refresh
// grants, and the tokens they issue.

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
	// Client credentials grants know no offline_access; they carry a
	// refresh token only when a test asked for the misbehaviour.
	if refreshable && (slices.Contains(scope, "offline_access") || g.endpoint != tokenPath) {
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

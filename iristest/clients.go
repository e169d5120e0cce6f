package iristest

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// APIKey is an account's API key ("API Tokens v2"), which gets tokens from
// /token/v2 with the client credentials grant.
type APIKey struct {
	ClientID, ClientSecret string
	// AllowedScopes are the scopes the key was created with; a request may
	// ask for any non-empty subset.
	AllowedScopes []string
}

// AppInstallation is the client an IrisX app gets for one installing
// account; it gets tokens from /apptoken with the client credentials grant.
type AppInstallation struct {
	ClientID, ClientSecret, AccountID string
	// Scopes are the scopes of the app manifest; a request may ask for any
	// non-empty subset.
	Scopes []string
}

// credentialClient is an API key or an app installation: a client that
// authenticates in the request body and gets tokens for itself, never
// refresh tokens.
type credentialClient struct {
	endpoint  string // the only token endpoint it may use
	secret    string
	scopes    []string
	accountID string
}

// The descriptions of scope refusals: the API key one is Trackunit's, the app
// one is made up, since the app token documentation names none.
var (
	errAPIKeyScope  = &oauthError{http.StatusBadRequest, "invalid_scope", "Requested scope is not allowed for this API Key."}
	errAppScope     = &oauthError{http.StatusBadRequest, "invalid_scope", "Requested scope is not in the app's manifest."}
	errScopeMissing = &oauthError{http.StatusBadRequest, "invalid_scope", "The scope parameter is required."}
)

// AddAPIKey adds k, replacing any API key with the same client ID. It panics
// if the client ID belongs to an API user or an app installation.
func (s *Server) AddAPIKey(k APIKey) {
	s.addCredentialClient(k.ClientID, &credentialClient{
		endpoint: apiKeyTokenPath,
		secret:   k.ClientSecret,
		scopes:   append([]string(nil), k.AllowedScopes...),
	})
}

// RemoveAPIKey deletes an API key, as deleting it in the API Keys app does,
// and revokes every token it got. Unknown client IDs are ignored.
func (s *Server) RemoveAPIKey(clientID string) { s.removeCredentialClient(clientID, apiKeyTokenPath) }

// AddApp adds an app installation, replacing any with the same client ID. It
// panics if the client ID belongs to an API user or an API key.
func (s *Server) AddApp(a AppInstallation) {
	s.addCredentialClient(a.ClientID, &credentialClient{
		endpoint:  appTokenPath,
		secret:    a.ClientSecret,
		scopes:    append([]string(nil), a.Scopes...),
		accountID: a.AccountID,
	})
}

// RemoveApp deletes an app installation, as uninstalling the app does, and
// revokes every token it got. Unknown client IDs are ignored.
func (s *Server) RemoveApp(clientID string) { s.removeCredentialClient(clientID, appTokenPath) }

func (s *Server) addCredentialClient(clientID string, c *credentialClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.userClients[clientID]; taken {
		panic(fmt.Sprintf("iristest: client ID %q already belongs to an API user", clientID))
	}
	if old := s.ccClients[clientID]; old != nil && old.endpoint != c.endpoint {
		panic(fmt.Sprintf("iristest: client ID %q already belongs to a client of %s", clientID, old.endpoint))
	}
	s.ccClients[clientID] = c
}

func (s *Server) removeCredentialClient(clientID, endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.ccClients[clientID]; c == nil || c.endpoint != endpoint {
		return
	}
	delete(s.ccClients, clientID)
	s.revokeGrantsLocked(func(g *grant) bool { return g.clientID == clientID })
}

// clientCredentialsGrant serves /token/v2 and /apptoken, which differ only
// in who may use them and how a scope refusal reads.
func (s *Server) clientCredentialsGrant(r *http.Request, body []byte, bodyErr error) (*tokenResponse, *oauthError) {
	form, e := parseForm(r, body, bodyErr)
	if e != nil {
		return nil, e
	}
	// Both documents send the credentials in the body; a client that sends
	// a Basic header is talking to the wrong endpoint or following the
	// wrong document.
	if len(r.Header.Values("Authorization")) > 0 {
		return nil, errInvalidClient
	}
	clientID := form.Get("client_id")

	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ccClients[clientID]
	if c == nil || c.endpoint != r.URL.Path || !equal(form.Get("client_secret"), c.secret) {
		return nil, errInvalidClient
	}
	switch form.Get("grant_type") {
	case "client_credentials":
	case "":
		return nil, errNoGrantType
	default:
		return nil, errUnsupportedGrant
	}
	scope, e := c.grantableScope(form.Get("scope"))
	if e != nil {
		return nil, e
	}
	switch c.endpoint {
	case apiKeyTokenPath:
		s.stats.APIKeyGrants++
	case appTokenPath:
		s.stats.AppTokenGrants++
	}
	g := &grant{endpoint: c.endpoint, clientID: clientID, accountID: c.accountID, scope: scope}
	return s.issueLocked(g, "client_credentials", scope, s.ccRefreshTokens), nil
}

// grantableScope checks a requested scope against what the client may ask
// for and returns it as granted: in request order, each scope once.
func (c *credentialClient) grantableScope(raw string) ([]string, *oauthError) {
	if raw == "" {
		return nil, errScopeMissing
	}
	refusal := errAPIKeyScope
	if c.endpoint == appTokenPath {
		refusal = errAppScope
	}
	var out []string
	for _, sc := range strings.Split(raw, " ") {
		if !validScopeToken(sc) {
			return nil, errBadScope
		}
		if !slices.Contains(c.scopes, sc) {
			return nil, refusal
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// validScopeToken applies RFC 6749 §3.3: one or more printable ASCII
// characters other than space, '"' and '\'.
func validScopeToken(sc string) bool {
	if sc == "" {
		return false
	}
	for _, r := range sc {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

// clientSecretLocked returns the secret of any client, whatever its kind, for
// the endpoints every client may use.
func (s *Server) clientSecretLocked(clientID string) (string, bool) {
	if c := s.ccClients[clientID]; c != nil {
		return c.secret, true
	}
	secret, ok := s.userClients[clientID]
	return secret, ok
}

// SetClientCredentialsRefreshTokens makes /token/v2 and /apptoken answers
// carry a refresh token, as Trackunit documents they do not: a client must
// ignore it, and tests check that it never comes back (IsRefreshToken,
// Requests). Off by default.
func (s *Server) SetClientCredentialsRefreshTokens(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ccRefreshTokens = on
}

package irisauth

import (
	"encoding/base64"
	"net/url"
	"strings"
	"time"
)

// GrantType is an OAuth grant_type, or the revocation request, which an
// error may also come from.
type GrantType string

const (
	GrantPassword          GrantType = "password"
	GrantRefreshToken      GrantType = "refresh_token"
	GrantClientCredentials GrantType = "client_credentials"
	GrantRevocation        GrantType = "revocation"
)

// ClientAuth is how a request proves which OAuth client sends it.
type ClientAuth int

const (
	// AuthBasic sends "Authorization: Basic base64(client_id:client_secret)"
	// of the raw pair, exactly as Trackunit documents it for /token; RFC
	// 6749's form-escaping of each part first would change any secret with
	// characters outside [A-Za-z0-9-_.~].
	AuthBasic ClientAuth = iota + 1
	// AuthInBody sends client_id and client_secret as form fields
	// (client_secret_post), as Trackunit documents for API keys and app
	// installations, with no Authorization header.
	AuthInBody
)

// Endpoint is one OAuth client at one token URL: everything a grant needs
// besides its own fields.
type Endpoint struct {
	TokenURL     string
	ClientID     string
	ClientSecret string
	Auth         ClientAuth
	// AttemptTimeout bounds each attempt; the client's retry budget bounds
	// the whole call.
	AttemptTimeout time.Duration
}

// Grant is one token request, described as a value.
type Grant struct {
	Endpoint Endpoint
	Type     GrantType
	// Params are the grant's own form fields; grant_type and, for
	// AuthInBody, the client credentials are added when it is sent.
	Params url.Values
}

// PasswordGrant is the resource-owner password grant of an API user.
func (e Endpoint) PasswordGrant(username, password string, scopes []string) Grant {
	params := url.Values{"username": {username}, "password": {password}}
	if len(scopes) > 0 {
		params.Set("scope", strings.Join(scopes, " "))
	}
	return Grant{Endpoint: e, Type: GrantPassword, Params: params}
}

// RefreshGrant trades a refresh token for a new access token and, at IRIS, a
// new refresh token.
func (e Endpoint) RefreshGrant(refreshToken string) Grant {
	return Grant{Endpoint: e, Type: GrantRefreshToken, Params: url.Values{"refresh_token": {refreshToken}}}
}

// ClientCredentialsGrant is the grant of API keys and app installations,
// which act as the client itself and get no refresh token.
func (e Endpoint) ClientCredentialsGrant(scopes []string) Grant {
	params := url.Values{}
	if len(scopes) > 0 {
		params.Set("scope", strings.Join(scopes, " "))
	}
	return Grant{Endpoint: e, Type: GrantClientCredentials, Params: params}
}

// RefreshToken is the refresh token the grant sends, if any.
func (g Grant) RefreshToken() string { return g.Params.Get("refresh_token") }

// form is the request body as sent.
func (g Grant) form() url.Values {
	form := make(url.Values, len(g.Params)+3)
	for k, v := range g.Params {
		form[k] = v
	}
	form.Set("grant_type", string(g.Type))
	g.Endpoint.addBodyCredentials(form)
	return form
}

func (e Endpoint) addBodyCredentials(form url.Values) {
	if e.Auth == AuthInBody {
		form.Set("client_id", e.ClientID)
		form.Set("client_secret", e.ClientSecret)
	}
}

// basicValue is the Authorization header value of AuthBasic.
func (e Endpoint) basicValue() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(e.ClientID+":"+e.ClientSecret))
}

// secrets lists the grant's secrets, which errors redact in every encoding
// an answer could echo them in (a misdirected token_url or a debugging proxy
// may echo its request): see redact.
func (g Grant) secrets() []string {
	return secretForms(g.Endpoint, g.Params.Get("password"), g.RefreshToken())
}

func secretForms(e Endpoint, others ...string) []string {
	var forms []string
	if e.ClientSecret != "" {
		forms = append(forms, strings.TrimPrefix(e.basicValue(), "Basic "))
	}
	for _, s := range append([]string{e.ClientSecret}, others...) {
		if s != "" {
			forms = append(forms, s)
		}
	}
	return forms
}

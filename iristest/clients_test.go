package iristest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var (
	testKey = APIKey{ClientID: "0oakey00000000000001", ClientSecret: "key+secret%/=", AllowedScopes: []string{"assets:read", "alerts:read", "sites"}}
	testApp = AppInstallation{ClientID: "0oaapp00000000000001", ClientSecret: "app-secret", AccountID: "acct-42", Scopes: []string{"asset.read", "fleet.read"}}
)

func newCredentialServer(t *testing.T) *Server {
	t.Helper()
	s := newTestServer(t)
	s.AddAPIKey(testKey)
	s.AddApp(testApp)
	return s
}

func clientCredentials(id, secret, scope string) string {
	return form("grant_type", "client_credentials", "client_id", id, "client_secret", secret, "scope", scope)
}

func keyForm(scope string) string {
	return clientCredentials(testKey.ClientID, testKey.ClientSecret, scope)
}
func appForm(scope string) string {
	return clientCredentials(testApp.ClientID, testApp.ClientSecret, scope)
}

func TestClientCredentialsEndpoints(t *testing.T) {
	t.Parallel()
	s := newCredentialServer(t)

	tests := []struct {
		name     string
		endpoint string // "v2" or "app"
		method   string // POST if empty
		ctype    string // ctForm if empty
		auth     string
		query    string
		body     string
		// want
		status    int
		errCode   string // "" for success
		errDesc   string // checked when set
		scope     string
		expiresIn float64
	}{
		{name: "API key", endpoint: "v2", body: keyForm("assets:read alerts:read"), status: 200, scope: "assets:read alerts:read", expiresIn: 1200},
		{name: "API key scopes keep request order", endpoint: "v2", body: keyForm("sites assets:read"), status: 200, scope: "sites assets:read", expiresIn: 1200},
		{name: "API key repeated scope reported once", endpoint: "v2", body: keyForm("sites sites"), status: 200, scope: "sites", expiresIn: 1200},
		{name: "app", endpoint: "app", body: appForm("fleet.read"), status: 200, scope: "fleet.read", expiresIn: 3600},
		{name: "charset allowed", endpoint: "v2", ctype: ctForm + "; charset=UTF-8", body: keyForm("sites"), status: 200, scope: "sites", expiresIn: 1200},
		{name: "unknown fields ignored", endpoint: "app", body: appForm("asset.read") + "&foo=bar", status: 200, scope: "asset.read", expiresIn: 3600},

		{name: "Basic header with body credentials", endpoint: "v2", auth: basic(testKey.ClientID, testKey.ClientSecret), body: keyForm("sites"), status: 401, errCode: "invalid_client"},
		{name: "Basic header only", endpoint: "v2", auth: basic(testKey.ClientID, testKey.ClientSecret), body: form("grant_type", "client_credentials", "scope", "sites"), status: 401, errCode: "invalid_client"},
		{name: "app with Basic header", endpoint: "app", auth: basic(testApp.ClientID, testApp.ClientSecret), body: appForm("fleet.read"), status: 401, errCode: "invalid_client"},
		{name: "wrong secret", endpoint: "v2", body: clientCredentials(testKey.ClientID, "nope", "sites"), status: 401, errCode: "invalid_client"},
		{name: "form-escaped secret", endpoint: "v2", body: clientCredentials(testKey.ClientID, "key%2Bsecret%25%2F%3D", "sites"), status: 401, errCode: "invalid_client"},
		{name: "unknown client", endpoint: "v2", body: clientCredentials("0oanobody", testKey.ClientSecret, "sites"), status: 401, errCode: "invalid_client"},
		{name: "missing client_id", endpoint: "v2", body: form("grant_type", "client_credentials", "client_secret", testKey.ClientSecret, "scope", "sites"), status: 401, errCode: "invalid_client"},
		{name: "missing client_secret", endpoint: "v2", body: form("grant_type", "client_credentials", "client_id", testKey.ClientID, "scope", "sites"), status: 401, errCode: "invalid_client"},
		{name: "app credentials at /token/v2", endpoint: "v2", body: appForm("fleet.read"), status: 401, errCode: "invalid_client"},
		{name: "API key credentials at /apptoken", endpoint: "app", body: keyForm("sites"), status: 401, errCode: "invalid_client"},
		{name: "API user credentials at /token/v2", endpoint: "v2", body: clientCredentials(mainUser.ClientID, mainUser.ClientSecret, "api"), status: 401, errCode: "invalid_client"},

		{name: "password grant", endpoint: "v2", body: form("grant_type", "password", "client_id", testKey.ClientID, "client_secret", testKey.ClientSecret, "username", "u", "password", "p", "scope", "sites"), status: 400, errCode: "unsupported_grant_type"},
		{name: "refresh grant at /apptoken", endpoint: "app", body: form("grant_type", "refresh_token", "client_id", testApp.ClientID, "client_secret", testApp.ClientSecret, "refresh_token", "rt_x"), status: 400, errCode: "unsupported_grant_type"},
		{name: "missing grant_type", endpoint: "v2", body: form("client_id", testKey.ClientID, "client_secret", testKey.ClientSecret, "scope", "sites"), status: 400, errCode: "invalid_request"},

		{name: "scope outside the key", endpoint: "v2", body: keyForm("sites fleet.read"), status: 400, errCode: "invalid_scope", errDesc: "Requested scope is not allowed for this API Key."},
		{name: "missing scope", endpoint: "v2", body: form("grant_type", "client_credentials", "client_id", testKey.ClientID, "client_secret", testKey.ClientSecret), status: 400, errCode: "invalid_scope"},
		{name: "empty scope", endpoint: "v2", body: keyForm(""), status: 400, errCode: "invalid_scope"},
		{name: "double space in scope", endpoint: "v2", body: keyForm("sites  assets:read"), status: 400, errCode: "invalid_scope"},
		{name: "comma-separated scope", endpoint: "v2", body: keyForm("sites,assets:read"), status: 400, errCode: "invalid_scope"},
		{name: "scope outside the manifest", endpoint: "app", body: appForm("asset.read sites"), status: 400, errCode: "invalid_scope"},
		{name: "missing app scope", endpoint: "app", body: form("grant_type", "client_credentials", "client_id", testApp.ClientID, "client_secret", testApp.ClientSecret), status: 400, errCode: "invalid_scope"},

		{name: "parameters in query", endpoint: "v2", query: "scope=sites", body: keyForm("sites"), status: 400, errCode: "invalid_request"},
		{name: "repeated client_id", endpoint: "v2", body: keyForm("sites") + "&client_id=" + testKey.ClientID, status: 400, errCode: "invalid_request"},
		{name: "repeated client_secret", endpoint: "app", body: appForm("fleet.read") + "&client_secret=x", status: 400, errCode: "invalid_request"},
		{name: "repeated scope", endpoint: "v2", body: keyForm("sites") + "&scope=sites", status: 400, errCode: "invalid_request"},
		{name: "JSON body", endpoint: "v2", ctype: "application/json", body: `{"grant_type":"client_credentials"}`, status: 400, errCode: "invalid_request"},
		{name: "no content type", endpoint: "app", ctype: "none", body: appForm("fleet.read"), status: 400, errCode: "invalid_request"},
		{name: "GET", endpoint: "v2", method: http.MethodGet, status: 405, errCode: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := s.TokenV2URL
			if tc.endpoint == "app" {
				u = s.AppTokenURL
			}
			req := newTokenRequest(t, tc.method, u, tc.query, tc.body, tc.ctype, tc.auth)
			before := s.Stats()
			res := do(t, req)
			after := s.Stats()
			if after.Requests != before.Requests+1 {
				t.Errorf("Requests %d → %d", before.Requests, after.Requests)
			}
			if tc.errCode != "" {
				wantOAuthError(t, res, tc.status, tc.errCode)
				if tc.errDesc != "" && res.str("error_description") != tc.errDesc {
					t.Errorf("error_description %q, want %q", res.str("error_description"), tc.errDesc)
				}
				if after.Rejected != before.Rejected+1 || after.APIKeyGrants != before.APIKeyGrants || after.AppTokenGrants != before.AppTokenGrants {
					t.Errorf("stats %+v → %+v", before, after)
				}
				return
			}
			if _, rt := wantToken(t, res, tc.scope, false); rt != "" {
				t.Errorf("refresh token issued")
			}
			if got := res.json["expires_in"]; got != tc.expiresIn {
				t.Errorf("expires_in %v, want %v", got, tc.expiresIn)
			}
			grants := after.APIKeyGrants - before.APIKeyGrants
			if tc.endpoint == "app" {
				grants = after.AppTokenGrants - before.AppTokenGrants
			}
			if grants != 1 || after.PasswordGrants != before.PasswordGrants {
				t.Errorf("stats %+v → %+v", before, after)
			}
		})
	}
}

func TestCredentialClientsAtTokenEndpoint(t *testing.T) {
	t.Parallel()
	s := newCredentialServer(t)
	for _, auth := range []string{basic(testKey.ClientID, testKey.ClientSecret), basic(testApp.ClientID, testApp.ClientSecret)} {
		wantOAuthError(t, post(t, s.TokenURL, auth, form("grant_type", "client_credentials", "scope", "sites")), 401, "invalid_client")
	}
}

func TestClientCredentialsTokensLifecycle(t *testing.T) {
	t.Parallel()
	s := newCredentialServer(t)
	clock := newFakeClock()
	s.SetClock(clock.Now)
	keyAuth := basic(testKey.ClientID, testKey.ClientSecret)
	appAuth := basic(testApp.ClientID, testApp.ClientSecret)

	keyAT, _ := wantToken(t, post(t, s.TokenV2URL, "", keyForm("sites")), "sites", false)
	appAT, _ := wantToken(t, post(t, s.AppTokenURL, "", appForm("asset.read fleet.read")), "asset.read fleet.read", false)

	// Introspection takes the client in a Basic header, like every
	// emulator-only endpoint, and shows only the client's own tokens.
	res := post(t, s.IntrospectionURL, keyAuth, form("token", keyAT))
	if res.status != 200 || res.json["active"] != true || res.str("client_id") != testKey.ClientID || res.str("scope") != "sites" || res.json["username"] != nil {
		t.Errorf("introspect API key token: %d %s", res.status, res.raw)
	}
	if exp := res.json["exp"]; exp != float64(clock.Now().Add(1200*time.Second).Unix()) {
		t.Errorf("exp %v", exp)
	}
	res = post(t, s.IntrospectionURL, appAuth, form("token", appAT))
	if res.json["active"] != true || res.str("account_id") != testApp.AccountID {
		t.Errorf("introspect app token: %s", res.raw)
	}
	if res := post(t, s.IntrospectionURL, appAuth, form("token", keyAT)); res.json["active"] != false {
		t.Errorf("app sees the API key's token: %s", res.raw)
	}

	if res := post(t, s.RevocationURL, keyAuth, form("token", keyAT)); res.status != 200 {
		t.Fatalf("revoke: %d %s", res.status, res.raw)
	}
	if active, _ := s.Introspect(keyAT); active {
		t.Error("revoked API key token still active")
	}
	clock.Advance(3600 * time.Second)
	if active, _ := s.Introspect(appAT); active {
		t.Error("app token active after 3600 s")
	}

	is, ok := s.IssuanceOf(appAT)
	want := Issuance{Endpoint: "/apptoken", GrantType: "client_credentials", ClientID: testApp.ClientID, AccountID: testApp.AccountID,
		Scope: "asset.read fleet.read", AccessToken: appAT, IssuedAt: clock.Now().Add(-time.Hour), ExpiresAt: clock.Now(), Answered: true}
	if !ok || is != want {
		t.Errorf("IssuanceOf(app token) = %+v, want %+v", is, want)
	}

	// Removing a client revokes its tokens and its credentials.
	keyAT, _ = wantToken(t, post(t, s.TokenV2URL, "", keyForm("sites")), "sites", false)
	appAT, _ = wantToken(t, post(t, s.AppTokenURL, "", appForm("fleet.read")), "fleet.read", false)
	s.RemoveApp(testKey.ClientID) // the wrong kind: ignored
	s.RemoveAPIKey(testApp.ClientID)
	if active, _ := s.Introspect(keyAT); !active {
		t.Fatal("removing with the wrong kind revoked a token")
	}
	s.RemoveAPIKey(testKey.ClientID)
	s.RemoveApp(testApp.ClientID)
	for _, at := range []string{keyAT, appAT} {
		if active, _ := s.Introspect(at); active {
			t.Error("token of a removed client still active")
		}
	}
	wantOAuthError(t, post(t, s.TokenV2URL, "", keyForm("sites")), 401, "invalid_client")
	wantOAuthError(t, post(t, s.AppTokenURL, "", appForm("fleet.read")), 401, "invalid_client")
	// The API user's tokens were never touched.
	at, _ := wantToken(t, login(t, s, mainUser, "api"), "api", false)
	s.RemoveAPIKey(mainUser.ClientID)
	if active, _ := s.Introspect(at); !active {
		t.Error("RemoveAPIKey revoked an API user's token")
	}
}

func TestClientCredentialsLifetimes(t *testing.T) {
	t.Parallel()
	s := newCredentialServer(t)
	s.SetAPIKeyTokenLifetime(90*time.Second + 500*time.Millisecond)
	s.SetAppTokenLifetime(-time.Second)
	s.SetTokenLifetime(30 * time.Second)
	for url, want := range map[string]float64{
		s.TokenV2URL:  90,
		s.AppTokenURL: 0,
	} {
		body := keyForm("sites")
		if url == s.AppTokenURL {
			body = appForm("fleet.read")
		}
		if res := post(t, url, "", body); res.json["expires_in"] != want {
			t.Errorf("%s: expires_in %v, want %v", url, res.json["expires_in"], want)
		}
	}
	if res := login(t, s, mainUser, "api"); res.json["expires_in"] != float64(30) {
		t.Errorf("/token: expires_in %v", res.json["expires_in"])
	}
}

func TestClientCredentialsFaultsAndLog(t *testing.T) {
	t.Parallel()
	s := newCredentialServer(t)
	s.FailNext(1, Fault{Status: 503, Body: "down"})
	s.FailNext(1, Fault{Status: 502, AfterHandling: true})
	if res := post(t, s.TokenV2URL, "", keyForm("sites")); res.status != 503 || string(res.raw) != "down" {
		t.Errorf("first: %d %s", res.status, res.raw)
	}
	if res := post(t, s.AppTokenURL, "", appForm("fleet.read")); res.status != 502 {
		t.Errorf("second: %d %s", res.status, res.raw)
	}
	if got := s.Issued(); len(got) != 1 || got[0].Endpoint != "/apptoken" || got[0].Answered {
		t.Errorf("Issued() = %+v", got)
	}
	s.SetFault(&Fault{AfterHandling: true, DropConnection: true})
	wantDropped(t, s.TokenV2URL, "", keyForm("sites"))
	s.SetFault(nil)

	s.SetResponseOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/apptoken" {
			return false
		}
		w.WriteHeader(418)
		return true
	})
	if res := post(t, s.AppTokenURL, "", appForm("fleet.read")); res.status != 418 {
		t.Errorf("override: %d", res.status)
	}
	s.SetResponseOverride(nil)
	wantToken(t, post(t, s.TokenV2URL, "", keyForm("assets:read")), "assets:read", false)

	st := s.Stats()
	if st.Requests != 5 || st.APIKeyGrants != 2 || st.AppTokenGrants != 1 {
		t.Errorf("stats %+v", st)
	}
	want := []struct {
		endpoint, clientID string
		status             int
	}{
		{"/token/v2", testKey.ClientID, 503},
		{"/apptoken", testApp.ClientID, 502},
		{"/token/v2", testKey.ClientID, 0},
		{"/apptoken", testApp.ClientID, 418},
		{"/token/v2", testKey.ClientID, 200},
	}
	reqs := s.Requests()
	if len(reqs) != len(want) {
		t.Fatalf("requests %+v", reqs)
	}
	for i, w := range want {
		r := reqs[i]
		if r.Endpoint != w.endpoint || r.ClientID != w.clientID || r.Status != w.status || r.GrantType != "client_credentials" || r.HeaderOK {
			t.Errorf("request %d = %+v, want %+v", i, r, w)
		}
	}
	if dump := fmt.Sprintf("%#v", reqs); strings.Contains(dump, testKey.ClientSecret) || strings.Contains(dump, testApp.ClientSecret) {
		t.Errorf("request log holds a secret: %s", dump)
	}
}

func TestClientIDsAreUniqueAcrossKinds(t *testing.T) {
	t.Parallel()
	for name, add := range map[string]func(*Server){
		"API key with a user's client": func(s *Server) { s.AddAPIKey(APIKey{ClientID: mainUser.ClientID}) },
		"app with a user's client":     func(s *Server) { s.AddApp(AppInstallation{ClientID: mainUser.ClientID}) },
		"app with an API key's client": func(s *Server) { s.AddApp(AppInstallation{ClientID: testKey.ClientID}) },
		"API key with an app's client": func(s *Server) { s.AddAPIKey(APIKey{ClientID: testApp.ClientID}) },
		"user with an API key's client": func(s *Server) {
			s.AddUser(User{ClientID: testKey.ClientID, Username: "x"})
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := NewUnstartedServer(mainUser)
			s.AddAPIKey(testKey)
			s.AddApp(testApp)
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			add(s)
		})
	}
	// Replacing a client of the same kind is fine.
	s := NewUnstartedServer()
	s.AddAPIKey(testKey)
	s.AddAPIKey(APIKey{ClientID: testKey.ClientID, ClientSecret: "new"})
}

// On request, client credentials answers carry a refresh token, which is
// on record like any other and usable nowhere.
func TestClientCredentialsRefreshTokensOnRequest(t *testing.T) {
	t.Parallel()
	s := newCredentialServer(t)
	res := post(t, s.TokenV2URL, "", keyForm("assets:read"))
	if res.str("refresh_token") != "" {
		t.Fatalf("a refresh token without the switch: %v", res)
	}
	s.SetClientCredentialsRefreshTokens(true)
	for _, tc := range []struct{ url, body string }{{s.TokenV2URL, keyForm("assets:read")}, {s.AppTokenURL, appForm("asset.read")}} {
		res := post(t, tc.url, "", tc.body)
		rt := res.str("refresh_token")
		if rt == "" || !s.IsRefreshToken(rt) {
			t.Fatalf("no refresh token on record from %s: %v", tc.url, res)
		}
		// /token serves API users only: the token is no use there.
		got := post(t, s.TokenURL, basic(testKey.ClientID, testKey.ClientSecret), form("grant_type", "refresh_token", "refresh_token", rt))
		wantOAuthError(t, got, http.StatusUnauthorized, "invalid_client")
	}
}

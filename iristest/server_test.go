package iristest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	good := basicOf(mainUser)
	pw := passwordForm(mainUser, "api")

	tests := []struct {
		name   string
		method string // POST if empty
		ctype  string // ctForm if empty; "none" sends no Content-Type
		auth   string
		query  string
		body   string
		// want
		status  int
		errCode string // "" for success
		scope   string
		refresh bool
	}{
		{name: "password grant", auth: good, body: pw, status: 200, scope: "api"},
		{name: "absent scope means api", auth: good, body: passwordForm(mainUser, ""), status: 200, scope: "api"},
		{name: "offline_access adds refresh token", auth: good, body: passwordForm(mainUser, "api offline_access"), status: 200, scope: "api offline_access", refresh: true},
		{name: "scopes reported in canonical order", auth: good, body: passwordForm(mainUser, "offline_access api"), status: 200, scope: "api offline_access", refresh: true},
		{name: "content type charset allowed", ctype: ctForm + "; charset=utf-8", auth: good, body: pw, status: 200, scope: "api"},
		{name: "content type case-insensitive", ctype: "Application/X-WWW-Form-URLEncoded", auth: good, body: pw, status: 200, scope: "api"},
		{name: "unknown fields ignored", auth: good, body: pw + "&audience=x&foo=bar", status: 200, scope: "api"},
		{name: "basic scheme case-insensitive", auth: "basic" + strings.TrimPrefix(good, "Basic"), body: pw, status: 200, scope: "api"},
		{name: "legacy user gets no refresh token", auth: basicOf(legacyUser), body: passwordForm(legacyUser, "api offline_access"), status: 200, scope: "api"},

		{name: "missing Authorization", body: pw, status: 401, errCode: "invalid_client"},
		{name: "form-escaped Basic credentials", auth: basic(url.QueryEscape(mainUser.ClientID), url.QueryEscape(mainUser.ClientSecret)), body: pw, status: 401, errCode: "invalid_client"},
		{name: "wrong client secret", auth: basic(mainUser.ClientID, "nope"), body: pw, status: 401, errCode: "invalid_client"},
		{name: "unknown client", auth: basic("0oaunknown", mainUser.ClientSecret), body: pw, status: 401, errCode: "invalid_client"},
		{name: "another client's secret", auth: basic(mainUser.ClientID, otherUser.ClientSecret), body: pw, status: 401, errCode: "invalid_client"},
		{name: "Basic without colon", auth: "Basic " + "bm9jb2xvbg==", body: pw, status: 401, errCode: "invalid_client"},
		{name: "Basic not base64", auth: "Basic !!!", body: pw, status: 401, errCode: "invalid_client"},
		{name: "Basic unpadded base64", auth: strings.TrimRight(good, "="), body: pw, status: 401, errCode: "invalid_client"},
		{name: "Bearer scheme", auth: "Bearer " + strings.TrimPrefix(good, "Basic "), body: pw, status: 401, errCode: "invalid_client"},
		{name: "Basic with two spaces", auth: "Basic  " + strings.TrimPrefix(good, "Basic "), body: pw, status: 401, errCode: "invalid_client"},

		{name: "JSON content type", ctype: "application/json", auth: good, body: `{"grant_type":"password"}`, status: 400, errCode: "invalid_request"},
		{name: "multipart content type", ctype: "multipart/form-data; boundary=x", auth: good, body: pw, status: 400, errCode: "invalid_request"},
		{name: "no content type", ctype: "none", auth: good, body: pw, status: 400, errCode: "invalid_request"},
		{name: "malformed content type", ctype: "application/x-www-form-urlencoded; charset", auth: good, body: pw, status: 400, errCode: "invalid_request"},
		{name: "latin-1 charset", ctype: ctForm + "; charset=iso-8859-1", auth: good, body: pw, status: 400, errCode: "invalid_request"},
		{name: "client credentials in body and header", auth: good, body: pw + "&" + form("client_id", mainUser.ClientID, "client_secret", mainUser.ClientSecret), status: 400, errCode: "invalid_request"},
		{name: "client credentials in body only", body: pw + "&" + form("client_id", mainUser.ClientID, "client_secret", mainUser.ClientSecret), status: 400, errCode: "invalid_request"},
		{name: "client_id alone in body", auth: good, body: pw + "&client_id=" + mainUser.ClientID, status: 400, errCode: "invalid_request"},
		{name: "parameters in query", auth: good, query: "grant_type=password", body: pw, status: 400, errCode: "invalid_request"},
		{name: "repeated grant_type", auth: good, body: pw + "&grant_type=password", status: 400, errCode: "invalid_request"},
		{name: "repeated scope", auth: good, body: pw + "&scope=api", status: 400, errCode: "invalid_request"},
		{name: "bad percent escape", auth: good, body: "grant_type=password&username=%zz", status: 400, errCode: "invalid_request"},
		{name: "semicolon separator", auth: good, body: "grant_type=password;username=x", status: 400, errCode: "invalid_request"},
		{name: "GET", method: http.MethodGet, auth: good, status: 405, errCode: "invalid_request"},
		{name: "PUT", method: http.MethodPut, auth: good, body: pw, status: 405, errCode: "invalid_request"},

		{name: "missing grant_type", auth: good, body: form("username", mainUser.Username, "password", mainUser.Password), status: 400, errCode: "invalid_request"},
		{name: "client_credentials grant", auth: good, body: form("grant_type", "client_credentials"), status: 400, errCode: "unsupported_grant_type"},
		{name: "authorization_code grant", auth: good, body: form("grant_type", "authorization_code", "code", "x"), status: 400, errCode: "unsupported_grant_type"},
		{name: "grant type is case-sensitive", auth: good, body: form("grant_type", "Password", "username", mainUser.Username, "password", mainUser.Password), status: 400, errCode: "unsupported_grant_type"},
		{name: "missing username", auth: good, body: form("grant_type", "password", "password", mainUser.Password), status: 400, errCode: "invalid_request"},
		{name: "missing password", auth: good, body: form("grant_type", "password", "username", mainUser.Username), status: 400, errCode: "invalid_request"},
		{name: "empty password", auth: good, body: form("grant_type", "password", "username", mainUser.Username, "password", ""), status: 400, errCode: "invalid_request"},
		{name: "wrong password", auth: good, body: form("grant_type", "password", "username", mainUser.Username, "password", "wrong"), status: 400, errCode: "invalid_grant"},
		{name: "form-escaped password", auth: good, body: form("grant_type", "password", "username", mainUser.Username, "password", url.QueryEscape(mainUser.Password)), status: 400, errCode: "invalid_grant"},
		{name: "unknown user", auth: good, body: form("grant_type", "password", "username", "nobody", "password", mainUser.Password), status: 400, errCode: "invalid_grant"},
		{name: "user of another client", auth: good, body: passwordForm(otherUser, "api"), status: 400, errCode: "invalid_grant"},
		{name: "unknown scope", auth: good, body: passwordForm(mainUser, "api openid"), status: 400, errCode: "invalid_scope"},
		{name: "comma-separated scope", auth: good, body: passwordForm(mainUser, "api,offline_access"), status: 400, errCode: "invalid_scope"},
		{name: "double space in scope", auth: good, body: passwordForm(mainUser, "api  offline_access"), status: 400, errCode: "invalid_scope"},
		{name: "trailing space in scope", auth: good, body: passwordForm(mainUser, "api "), status: 400, errCode: "invalid_scope"},
		{name: "missing refresh_token", auth: good, body: form("grant_type", "refresh_token"), status: 400, errCode: "invalid_request"},
		{name: "unknown refresh_token", auth: good, body: form("grant_type", "refresh_token", "refresh_token", "rt_nope"), status: 400, errCode: "invalid_grant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := newTokenRequest(t, tc.method, s.TokenURL, tc.query, tc.body, tc.ctype, tc.auth)
			before := s.Stats()
			res := do(t, req)
			after := s.Stats()
			if tc.errCode != "" {
				wantOAuthError(t, res, tc.status, tc.errCode)
				if after.Rejected != before.Rejected+1 {
					t.Errorf("Rejected %d → %d", before.Rejected, after.Rejected)
				}
				if tc.status == 401 && res.header.Get("WWW-Authenticate") != "Basic" {
					t.Errorf("WWW-Authenticate %q", res.header.Get("WWW-Authenticate"))
				}
				if tc.status == 405 && res.header.Get("Allow") != "POST" {
					t.Errorf("Allow %q", res.header.Get("Allow"))
				}
				if res.str("error_description") == "" {
					t.Errorf("no error_description")
				}
				return
			}
			wantToken(t, res, tc.scope, tc.refresh)
			if res.json["expires_in"] != float64(3600) {
				t.Errorf("expires_in %v", res.json["expires_in"])
			}
			if after.PasswordGrants != before.PasswordGrants+1 || after.Rejected != before.Rejected {
				t.Errorf("stats %+v → %+v", before, after)
			}
		})
	}
}

func TestErrorBodiesMatchOkta(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	res := post(t, s.TokenURL, basic(mainUser.ClientID, "wrong"), passwordForm(mainUser, "api"))
	if got := string(res.raw); got != `{"error":"invalid_client","error_description":"Client authentication failed."}` {
		t.Errorf("invalid_client body %s", got)
	}
	res = post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "password", "username", mainUser.Username, "password", "x"))
	if got := string(res.raw); got != `{"error":"invalid_grant","error_description":"The credentials provided were invalid."}` {
		t.Errorf("invalid_grant body %s", got)
	}
}

func TestBasicHeaderRawVersusFormEscaped(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	escaped := basic(url.QueryEscape(mainUser.ClientID), url.QueryEscape(mainUser.ClientSecret))
	if escaped == basicOf(mainUser) {
		t.Fatal("test secret does not exercise escaping")
	}
	wantOAuthError(t, post(t, s.TokenURL, escaped, passwordForm(mainUser, "api")), 401, "invalid_client")
	wantToken(t, post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")), "api", false)

	// For a secret of unreserved characters both forms are the same bytes,
	// so such a client works against the real server and here alike.
	escaped = basic(url.QueryEscape(otherUser.ClientID), url.QueryEscape(otherUser.ClientSecret))
	wantToken(t, post(t, s.TokenURL, escaped, passwordForm(otherUser, "api")), "api", false)

	// A colon in the secret belongs to the secret: the pair splits at the
	// first colon only.
	colon := User{ClientID: "0oacolon", ClientSecret: "a:b:c", Username: "colon-user", Password: "p"}
	s.AddUser(colon)
	wantToken(t, post(t, s.TokenURL, basicOf(colon), passwordForm(colon, "api")), "api", false)
}

func TestLegacyUser(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	for _, scope := range []string{"", "api", "api offline_access"} {
		wantToken(t, login(t, s, legacyUser, scope), "api", false)
	}
	if n := s.LiveRefreshTokens(legacyUser.Username); n != 0 {
		t.Errorf("LiveRefreshTokens %d", n)
	}
}

func TestRefreshRotation(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	at1, rt1 := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	seen := map[string]bool{at1: true, rt1: true}
	rt := rt1
	for i := range 3 {
		res := refresh(t, s, mainUser, rt)
		at, next := wantToken(t, res, "api offline_access", true)
		if seen[at] || seen[next] {
			t.Fatalf("refresh %d returned a token seen before", i)
		}
		seen[at], seen[next] = true, true
		if active, _ := s.Introspect(at); !active {
			t.Errorf("new access token inactive")
		}
		if n := s.LiveRefreshTokens(mainUser.Username); n != 1 {
			t.Errorf("LiveRefreshTokens %d after refresh %d", n, i)
		}
		rt = next
	}
	// Earlier access tokens stay valid until they expire, as on a real
	// server, which cannot recall a bearer token it handed out.
	if active, _ := s.Introspect(at1); !active {
		t.Errorf("first access token inactive after rotation")
	}
	st := s.Stats()
	if st.PasswordGrants != 1 || st.RefreshGrants != 3 || st.RefreshReuse != 0 || st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
	reqs := s.Requests()
	if len(reqs) != 4 || reqs[1].GrantType != "refresh_token" || reqs[1].RefreshToken != rt1 {
		t.Errorf("requests %+v", reqs)
	}
}

func TestRefreshReuse(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	_, rt1 := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	_, rt2 := wantToken(t, refresh(t, s, mainUser, rt1), "api offline_access", true)

	for i := 1; i <= 2; i++ {
		res := refresh(t, s, mainUser, rt1)
		wantOAuthError(t, res, 400, "invalid_grant")
		if st := s.Stats(); st.RefreshReuse != i {
			t.Fatalf("RefreshReuse %d, want %d", st.RefreshReuse, i)
		}
	}
	// A reuse does not take the rest of the chain down with it.
	wantToken(t, refresh(t, s, mainUser, rt2), "api offline_access", true)

	// An unknown token is not a reuse.
	wantOAuthError(t, refresh(t, s, mainUser, "rt_unknown"), 400, "invalid_grant")
	if st := s.Stats(); st.RefreshReuse != 2 || st.RefreshGrants != 2 || st.Rejected != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestRefreshTokenOfAnotherClient(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	_, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	wantOAuthError(t, refresh(t, s, otherUser, rt), 400, "invalid_grant")
	if st := s.Stats(); st.RefreshReuse != 0 {
		t.Errorf("RefreshReuse %d", st.RefreshReuse)
	}
	// The foreign attempt must not have consumed the token.
	wantToken(t, refresh(t, s, mainUser, rt), "api offline_access", true)
}

func TestRefreshScope(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	_, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)

	res := post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "refresh_token", "refresh_token", rt, "scope", "api bogus"))
	wantOAuthError(t, res, 400, "invalid_scope")
	res = post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "refresh_token", "refresh_token", rt, "scope", "offline_access api"))
	_, rt = wantToken(t, res, "api offline_access", true)
	// Narrowing away offline_access ends the chain: no new refresh token.
	res = post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "refresh_token", "refresh_token", rt, "scope", "api"))
	wantToken(t, res, "api", false)
	if n := s.LiveRefreshTokens(mainUser.Username); n != 0 {
		t.Errorf("LiveRefreshTokens %d", n)
	}

	// Widening beyond the original grant is refused and consumes nothing.
	_, rt = wantToken(t, login(t, s, mainUser, "offline_access"), "offline_access", true)
	res = post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "refresh_token", "refresh_token", rt, "scope", "api offline_access"))
	wantOAuthError(t, res, 400, "invalid_scope")
	wantToken(t, refresh(t, s, mainUser, rt), "offline_access", true)
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	at1, rt1 := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	at2, rt2 := wantToken(t, refresh(t, s, mainUser, rt1), "api offline_access", true)
	atLone, _ := wantToken(t, login(t, s, mainUser, "api"), "api", false)

	revoke := func(auth, body string) result {
		t.Helper()
		return post(t, s.RevocationURL, auth, body)
	}

	// Revoking an access token kills that token only.
	if res := revoke(basicOf(mainUser), form("token", atLone, "token_type_hint", "access_token")); res.status != 200 {
		t.Fatalf("revoke access token: %d %s", res.status, res.raw)
	}
	if active, _ := s.Introspect(atLone); active {
		t.Error("revoked access token still active")
	}
	if active, _ := s.Introspect(at2); !active {
		t.Error("unrelated access token inactive")
	}

	// Another client's token: 200, but nothing happens.
	if res := revoke(basicOf(otherUser), form("token", rt2)); res.status != 200 {
		t.Fatalf("revoke foreign token: %d", res.status)
	}
	if n := s.LiveRefreshTokens(mainUser.Username); n != 1 {
		t.Fatalf("foreign revocation took effect: LiveRefreshTokens %d", n)
	}

	// Revoking a refresh token (with a misleading hint) revokes its grant,
	// access tokens included (RFC 7009 §2.1).
	if res := revoke(basicOf(mainUser), form("token", rt2, "token_type_hint", "access_token")); res.status != 200 {
		t.Fatalf("revoke refresh token: %d", res.status)
	}
	if n := s.LiveRefreshTokens(mainUser.Username); n != 0 {
		t.Errorf("LiveRefreshTokens %d", n)
	}
	for _, at := range []string{at1, at2} {
		if active, _ := s.Introspect(at); active {
			t.Error("access token of revoked grant still active")
		}
	}
	wantOAuthError(t, refresh(t, s, mainUser, rt2), 400, "invalid_grant")

	// Unknown tokens are fine (RFC 7009 §2.2).
	if res := revoke(basicOf(mainUser), form("token", "whatever")); res.status != 200 {
		t.Errorf("revoke unknown token: %d", res.status)
	}
	st := s.Stats()
	if st.Revocations != 4 || st.RefreshReuse != 0 {
		t.Errorf("stats %+v", st)
	}

	// The same strictness as /token.
	wantOAuthError(t, revoke("", form("token", at1)), 401, "invalid_client")
	wantOAuthError(t, revoke(basic(url.QueryEscape(mainUser.ClientID), url.QueryEscape(mainUser.ClientSecret)), form("token", at1)), 401, "invalid_client")
	wantOAuthError(t, revoke(basicOf(mainUser), ""), 400, "invalid_request")
	wantOAuthError(t, revoke(basicOf(mainUser), form("token", at1, "client_id", mainUser.ClientID)), 400, "invalid_request")
	req, _ := http.NewRequest(http.MethodPost, s.RevocationURL, strings.NewReader(`{"token":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", basicOf(mainUser))
	wantOAuthError(t, do(t, req), 400, "invalid_request")
	req, _ = http.NewRequest(http.MethodGet, s.RevocationURL, nil)
	wantOAuthError(t, do(t, req), 405, "invalid_request")
	if st := s.Stats(); st.Revocations != 4 || st.Requests != 4 {
		t.Errorf("stats %+v (Requests counts /token only)", st)
	}
}

func TestRevokeAllAndRemoveUser(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	at, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	_, otherRT := wantToken(t, login(t, s, otherUser, "api offline_access"), "api offline_access", true)

	s.RevokeAll(mainUser.Username)
	if active, _ := s.Introspect(at); active {
		t.Error("access token active after RevokeAll")
	}
	if n := s.LiveRefreshTokens(mainUser.Username); n != 0 {
		t.Errorf("LiveRefreshTokens %d", n)
	}
	wantOAuthError(t, refresh(t, s, mainUser, rt), 400, "invalid_grant")
	if s.Stats().RefreshReuse != 0 {
		t.Error("revoked token counted as reuse")
	}
	if n := s.LiveRefreshTokens(otherUser.Username); n != 1 {
		t.Errorf("other user's tokens touched: %d", n)
	}
	// New sessions still work.
	_, rt = wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)

	// Password rotation: the old password and old tokens stop working, the
	// new password works.
	s.RemoveUser(mainUser.Username)
	wantOAuthError(t, refresh(t, s, mainUser, rt), 401, "invalid_client") // its client went with it
	rotated := mainUser
	rotated.Password = "new-password"
	s.AddUser(rotated)
	wantOAuthError(t, refresh(t, s, mainUser, rt), 400, "invalid_grant")
	wantOAuthError(t, post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")), 400, "invalid_grant")
	wantToken(t, login(t, s, rotated, "api"), "api", false)

	// Removing one user of a shared client leaves the client in place.
	second := User{ClientID: otherUser.ClientID, ClientSecret: otherUser.ClientSecret, Username: "second", Password: "pw"}
	s.AddUser(second)
	s.RemoveUser(second.Username)
	wantToken(t, refresh(t, s, otherUser, otherRT), "api offline_access", true)
}

func TestIntrospectionExpiry(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	clock := newFakeClock()
	s.SetClock(clock.Now)
	s.SetTokenLifetime(60 * time.Second)
	issued := clock.Now()
	at, _ := wantToken(t, login(t, s, mainUser, "api"), "api", false)

	active, exp := s.Introspect(at)
	if !active || !exp.Equal(issued.Add(60*time.Second)) {
		t.Fatalf("Introspect = %t, %v", active, exp)
	}
	introspect := func(u User, token string) result {
		t.Helper()
		res := post(t, s.IntrospectionURL, basicOf(u), form("token", token))
		if res.status != 200 {
			t.Fatalf("introspect: %d %s", res.status, res.raw)
		}
		return res
	}
	res := introspect(mainUser, at)
	if res.json["active"] != true || res.json["exp"] != float64(exp.Unix()) ||
		res.str("username") != mainUser.Username || res.str("client_id") != mainUser.ClientID || res.str("scope") != "api" {
		t.Errorf("introspection %s", res.raw)
	}
	if res := introspect(otherUser, at); res.json["active"] != false || len(res.json) != 1 {
		t.Errorf("another client sees the token: %s", res.raw)
	}

	clock.Advance(59 * time.Second)
	if active, _ := s.Introspect(at); !active {
		t.Error("inactive before expiry")
	}
	clock.Advance(time.Second)
	if active, _ := s.Introspect(at); active {
		t.Error("active at expiry")
	}
	if res := introspect(mainUser, at); string(res.raw) != `{"active":false}` {
		t.Errorf("expired token: %s", res.raw)
	}
	if active, exp := s.Introspect("at_unknown"); active || !exp.IsZero() {
		t.Errorf("unknown token: %t %v", active, exp)
	}
	wantOAuthError(t, post(t, s.IntrospectionURL, "", form("token", at)), 401, "invalid_client")
	wantOAuthError(t, post(t, s.IntrospectionURL, basicOf(mainUser), ""), 400, "invalid_request")
}

func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	for _, tc := range []struct {
		set  time.Duration
		want float64
	}{
		{90*time.Second + 700*time.Millisecond, 90},
		{0, 0},
		{-time.Minute, 0},
		{24 * time.Hour, 86400},
	} {
		s.SetTokenLifetime(tc.set)
		res := login(t, s, mainUser, "api")
		if res.json["expires_in"] != tc.want {
			t.Errorf("SetTokenLifetime(%v): expires_in %v, want %v", tc.set, res.json["expires_in"], tc.want)
		}
	}
	// A zero lifetime yields tokens that are born expired.
	s.SetTokenLifetime(0)
	at, _ := wantToken(t, login(t, s, mainUser, "api"), "api", false)
	s.SetTokenLifetime(24 * time.Hour)
	if active, _ := s.Introspect(at); active {
		t.Error("zero-lifetime token active")
	}
}

func TestRequestLog(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	clock := newFakeClock()
	s.SetClock(clock.Now)
	login(t, s, mainUser, "api offline_access")
	post(t, s.TokenURL, basic(mainUser.ClientID, "wrong"), passwordForm(mainUser, "api"))
	post(t, s.TokenURL, "", passwordForm(mainUser, "api")+"&client_id=x")

	reqs := s.Requests()
	want := []Request{
		{Endpoint: "/token", GrantType: "password", ClientID: mainUser.ClientID, Username: mainUser.Username, Scope: "api offline_access", HeaderOK: true, Status: 200, Time: clock.Now()},
		{Endpoint: "/token", GrantType: "password", ClientID: mainUser.ClientID, Username: mainUser.Username, Scope: "api", HeaderOK: false, Status: 401, Time: clock.Now()},
		{Endpoint: "/token", GrantType: "password", ClientID: "x", Username: mainUser.Username, Scope: "api", HeaderOK: false, Status: 400, Time: clock.Now()},
	}
	if len(reqs) != len(want) {
		t.Fatalf("got %d requests", len(reqs))
	}
	for i := range want {
		if reqs[i] != want[i] {
			t.Errorf("request %d = %+v, want %+v", i, reqs[i], want[i])
		}
		if dump := fmt.Sprintf("%#v", reqs[i]); strings.Contains(dump, mainUser.Password) || strings.Contains(dump, mainUser.ClientSecret) {
			t.Errorf("request log holds a secret: %s", dump)
		}
	}

	// The log is a copy.
	reqs[0].Username = "changed"
	if s.Requests()[0].Username != mainUser.Username {
		t.Error("Requests returned shared state")
	}
	s.ResetStats()
	if st := s.Stats(); st != (Stats{}) || len(s.Requests()) != 0 {
		t.Errorf("after ResetStats: %+v, %d requests", st, len(s.Requests()))
	}
}

func TestUnknownPath(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	res := post(t, s.URL+"/oauth2/v1/token", basicOf(mainUser), passwordForm(mainUser, "api"))
	if res.status != 404 {
		t.Errorf("status %d", res.status)
	}
	if st := s.Stats(); st.Requests != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestOversizeBody(t *testing.T) {
	t.Parallel()
	s := NewUnstartedServer(mainUser)
	body := passwordForm(mainUser, "api") + "&pad=" + strings.Repeat("a", maxBodyBytes)
	req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", basicOf(mainUser))
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != 400 || !strings.Contains(w.Body.String(), `"invalid_request"`) {
		t.Errorf("got %d %s", w.Code, w.Body)
	}
	if st := s.Stats(); st.PasswordGrants != 0 || st.Rejected != 1 || st.Requests != 1 {
		t.Errorf("stats %+v", st)
	}
	// Just under the bound is accepted.
	body = passwordForm(mainUser, "api") + "&pad="
	body += strings.Repeat("a", maxBodyBytes-len(body))
	req = httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", basicOf(mainUser))
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("body of exactly %d bytes: %d %s", len(body), w.Code, w.Body)
	}
}

func TestTokensAreRandom(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	seen := make(map[string]bool)
	for range 20 {
		at, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
		for _, tok := range []string{at, rt} {
			if seen[tok] {
				t.Fatalf("token repeated")
			}
			seen[tok] = true
			for _, secret := range []string{mainUser.Password, mainUser.ClientSecret, mainUser.Username} {
				if strings.Contains(tok, secret) {
					t.Fatalf("token contains a credential")
				}
			}
		}
	}
}

// FuzzTokenEndpoint checks that no input makes the handler panic or answer
// with anything but a well-formed OAuth response.
func FuzzTokenEndpoint(f *testing.F) {
	f.Add("POST", "application/x-www-form-urlencoded", basicOf(mainUser), passwordForm(mainUser, "api offline_access"))
	f.Add("POST", "application/x-www-form-urlencoded; charset=utf-8", basicOf(mainUser), "grant_type=refresh_token&refresh_token=rt_x")
	f.Add("POST", "application/x-www-form-urlencoded", "Basic", "grant_type=password")
	f.Add("POST", "text/plain; charset", "Basic Og==", "%")
	f.Add("GET", "", "Basic \x00\xff", "\x00\xff;&&==")
	f.Add("POST", "application/x-www-form-urlencoded", "basic Zm9vOmJhcg", "scope=%20&grant_type=password&username=a&password=b")
	s := NewUnstartedServer(mainUser, legacyUser)
	f.Fuzz(func(t *testing.T, method, ctype, auth, body string) {
		req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
		req.Method = method
		req.Header["Content-Type"] = []string{ctype}
		req.Header["Authorization"] = []string{auth}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		switch w.Code {
		case 200, 400, 401, 405:
		default:
			t.Fatalf("status %d", w.Code)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", w.Header().Get("Content-Type"))
		}
	})
}

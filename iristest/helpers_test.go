package iristest

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The main user's secrets contain every character that RFC 6749 form-escaping
// would change, so a client that escapes before base64 cannot pass by luck.
var (
	mainUser = User{
		ClientID:     "0oamain0000000000001",
		ClientSecret: "s+cr%2Ft/=&x y",
		Username:     "api-user",
		Password:     "pa ss+word%41&=",
	}
	legacyUser = User{
		ClientID:        "0oalegacy00000000001",
		ClientSecret:    "legacy-secret",
		Username:        "legacy-user",
		Password:        "legacy-pass",
		NoRefreshTokens: true,
	}
	otherUser = User{
		ClientID:     "0oaother000000000001",
		ClientSecret: "other-secret",
		Username:     "other-user",
		Password:     "other-pass",
	}
)

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer(mainUser, legacyUser, otherUser)
	t.Cleanup(s.Close)
	return s
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

func basicOf(u User) string { return basic(u.ClientID, u.ClientSecret) }

func form(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

func passwordForm(u User, scope string) string {
	if scope == "" {
		return form("grant_type", "password", "username", u.Username, "password", u.Password)
	}
	return form("grant_type", "password", "username", u.Username, "password", u.Password, "scope", scope)
}

type result struct {
	status int
	header http.Header
	raw    []byte
	json   map[string]any
}

func (r result) str(key string) string {
	s, _ := r.json[key].(string)
	return s
}

// post sends a form request the way a correct client would; auth "" sends no
// Authorization header.
func post(t *testing.T, rawURL, auth, body string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) result {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	res := result{status: resp.StatusCode, header: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &res.json); err != nil {
			t.Fatalf("invalid JSON body %q: %v", raw, err)
		}
	}
	return res
}

// login runs a password grant that must succeed.
func login(t *testing.T, s *Server, u User, scope string) result {
	t.Helper()
	res := post(t, s.TokenURL, basicOf(u), passwordForm(u, scope))
	if res.status != http.StatusOK {
		t.Fatalf("password grant: status %d, body %s", res.status, res.raw)
	}
	return res
}

func refresh(t *testing.T, s *Server, u User, rt string) result {
	t.Helper()
	return post(t, s.TokenURL, basicOf(u), form("grant_type", "refresh_token", "refresh_token", rt))
}

func wantOAuthError(t *testing.T, res result, status int, code string) {
	t.Helper()
	if res.status != status || res.str("error") != code {
		t.Fatalf("got status %d body %s, want %d %s", res.status, res.raw, status, code)
	}
	if res.header.Get("Cache-Control") != "no-store" {
		t.Errorf("error response without Cache-Control: no-store")
	}
}

// wantToken checks a successful token response and returns the access and
// refresh tokens.
func wantToken(t *testing.T, res result, scope string, withRefresh bool) (at, rt string) {
	t.Helper()
	if res.status != http.StatusOK {
		t.Fatalf("status %d, body %s", res.status, res.raw)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := res.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	if res.str("token_type") != "Bearer" {
		t.Errorf("token_type %v", res.json["token_type"])
	}
	if _, ok := res.json["expires_in"].(float64); !ok {
		t.Errorf("expires_in %v is not a number", res.json["expires_in"])
	}
	if got := res.str("scope"); got != scope {
		t.Errorf("scope %q, want %q", got, scope)
	}
	at, rt = res.str("access_token"), res.str("refresh_token")
	if !strings.HasPrefix(at, "at_") || len(at) < 40 {
		t.Errorf("access_token %q", at)
	}
	_, hasRT := res.json["refresh_token"]
	if hasRT != withRefresh {
		t.Errorf("refresh_token present %t, want %t", hasRT, withRefresh)
	}
	if withRefresh && (!strings.HasPrefix(rt, "rt_") || len(rt) < 40) {
		t.Errorf("refresh_token %q", rt)
	}
	return at, rt
}

func newFakeClock() *Clock { return NewClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)) }

// newTokenRequest builds a token endpoint request the way the protocol
// tables describe one: method "" is POST, ctype "" is the form type and
// "none" sends no Content-Type, query goes into the URL.
func newTokenRequest(t *testing.T, method, endpoint, query, body, ctype, auth string) *http.Request {
	t.Helper()
	if method == "" {
		method = http.MethodPost
	}
	if query != "" {
		endpoint += "?" + query
	}
	req, err := http.NewRequest(method, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch ctype {
	case "":
		req.Header.Set("Content-Type", ctForm)
	case "none":
	default:
		req.Header.Set("Content-Type", ctype)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return req
}

const ctForm = "application/x-www-form-urlencoded"

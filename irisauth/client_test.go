package irisauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// clientUser's secrets are long and distinctive, so that finding one in an
// error text cannot be a coincidence.
var clientUser = iristest.User{
	ClientID:     "0oa-client-test",
	ClientSecret: "cs-7f3k+Qz9%wLm",
	Username:     "client-test-user",
	Password:     "pw-Xr4v N8@pLq2",
}

// testClientPolicy retries enough to show retries, with a budget no test
// reaches unless it means to.
var testClientPolicy = RetryPolicy{MaxAttempts: 3, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Budget: 20 * time.Second}

// clientHarness is a Client whose waits are recorded instead of slept.
type clientHarness struct {
	*Client
	clock  *iristest.Clock
	mu     sync.Mutex
	sleeps []time.Duration
}

func newClientHarness() *clientHarness {
	h := &clientHarness{Client: NewClient(hclog.NewNullLogger()), clock: newTestClock()}
	h.Retry = testClientPolicy
	h.Now = h.clock.Now
	h.Sleep = func(ctx context.Context, d time.Duration) error {
		h.mu.Lock()
		h.sleeps = append(h.sleeps, d)
		h.mu.Unlock()
		return ctx.Err()
	}
	return h
}

func (h *clientHarness) slept() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.sleeps...)
}

// credentials is an API user at a token URL, as the engine would hold it;
// the harness turns it into grants.
type credentials struct {
	TokenURL, RevocationURL                    string
	ClientID, ClientSecret, Username, Password string
	Scopes                                     []string
}

func (c credentials) endpoint(attemptTimeout time.Duration) Endpoint {
	return Endpoint{TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret, Auth: AuthBasic, AttemptTimeout: attemptTimeout}
}

// PasswordGrant, RefreshGrant and Revoke send the grants an API user's
// engine sends, the way the engine sends them.
func (h *clientHarness) PasswordGrant(ctx context.Context, c credentials, attemptTimeout time.Duration) (*Token, error) {
	res, err := h.Exchange(ctx, c.endpoint(attemptTimeout).PasswordGrant(c.Username, c.Password, c.Scopes))
	return res.Token, err
}

func (h *clientHarness) RefreshGrant(ctx context.Context, c credentials, refreshToken string, attemptTimeout time.Duration) (*Token, error) {
	res, err := h.Exchange(ctx, c.endpoint(attemptTimeout).RefreshGrant(refreshToken))
	return res.Token, err
}

func (h *clientHarness) Revoke(ctx context.Context, c credentials, token, hint string, timeout time.Duration) error {
	if c.RevocationURL == "" {
		return nil
	}
	return h.Client.Revoke(ctx, c.endpoint(timeout), c.RevocationURL, token, hint, timeout)
}

func credentialsFor(tokenURL string, u iristest.User) credentials {
	return credentials{
		TokenURL:     tokenURL,
		ClientID:     u.ClientID,
		ClientSecret: u.ClientSecret,
		Username:     u.Username,
		Password:     u.Password,
		Scopes:       []string{"api", "offline_access"},
	}
}

func newClientEmulator(t *testing.T) *iristest.Server {
	t.Helper()
	srv := iristest.NewServer(clientUser)
	t.Cleanup(srv.Close)
	return srv
}

// requireClientError returns err as an *Error of the given kind.
func requireClientError(t *testing.T, err error, kind ErrorKind) *Error {
	t.Helper()
	require.Error(t, err)
	var e *Error
	require.True(t, errors.As(err, &e), "not an *Error: %T %v", err, err)
	require.Equal(t, kind, e.Kind, "error: %v", err)
	return e
}

// fixedResponse serves the same answer to every request and counts them.
// An empty contentType sends no Content-Type header at all.
func fixedResponse(t *testing.T, status int, contentType, body string, header map[string]string) (string, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if contentType == "" {
			// nil stops net/http from sniffing one.
			w.Header()["Content-Type"] = nil
		} else {
			w.Header().Set("Content-Type", contentType)
		}
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token", &hits
}

func TestParseTokenResponse(t *testing.T) {
	t.Parallel()
	const (
		jsonType = "application/json"
		good     = `"access_token":"at-1","token_type":"Bearer"`
	)
	cases := []struct {
		name        string
		contentType string
		body        string
		wantDetail  string        // empty for success
		wantLife    time.Duration // on success
	}{
		{"complete", jsonType, `{` + good + `,"expires_in":3600,"scope":"api","refresh_token":"rt-1"}`, "", time.Hour},
		{"lower-case bearer", jsonType, `{"access_token":"at-1","token_type":"bearer","expires_in":60}`, "", time.Minute},
		{"upper-case bearer", jsonType, `{"access_token":"at-1","token_type":"BEARER","expires_in":60}`, "", time.Minute},
		{"access_token missing", jsonType, `{"token_type":"Bearer","expires_in":3600}`, "access_token is missing", 0},
		{"access_token empty", jsonType, `{"access_token":"","token_type":"Bearer"}`, "access_token is missing", 0},
		{"access_token null", jsonType, `{"access_token":null,"token_type":"Bearer"}`, "access_token is missing", 0},
		{"access_token not a string", jsonType, `{"access_token":12345678901234567890,"token_type":"Bearer"}`, "not a JSON token response", 0},
		{"token_type MAC", jsonType, `{"access_token":"at-1","token_type":"MAC"}`, "token_type is not Bearer", 0},
		{"token_type missing", jsonType, `{"access_token":"at-1"}`, "token_type is not Bearer", 0},
		{"token_type with padding", jsonType, `{"access_token":"at-1","token_type":" Bearer"}`, "token_type is not Bearer", 0},
		{"expires_in missing", jsonType, `{` + good + `}`, "", defaultLifetime},
		{"expires_in null", jsonType, `{` + good + `,"expires_in":null}`, "", defaultLifetime},
		{"expires_in zero", jsonType, `{` + good + `,"expires_in":0}`, "expires_in is not positive", 0},
		{"expires_in negative", jsonType, `{` + good + `,"expires_in":-3600}`, "expires_in is not positive", 0},
		{"expires_in numeric string", jsonType, `{` + good + `,"expires_in":"3600"}`, "", time.Hour},
		{"expires_in padded string", jsonType, `{` + good + `,"expires_in":" 3600 "}`, "", time.Hour},
		{"expires_in non-numeric string", jsonType, `{` + good + `,"expires_in":"soon"}`, "expires_in is not a number", 0},
		{"expires_in empty string", jsonType, `{` + good + `,"expires_in":""}`, "expires_in is not a number", 0},
		{"expires_in NaN string", jsonType, `{` + good + `,"expires_in":"NaN"}`, "expires_in is not a number", 0},
		{"expires_in float is floored", jsonType, `{` + good + `,"expires_in":3599.9}`, "", 3599 * time.Second},
		{"expires_in exponent", jsonType, `{` + good + `,"expires_in":3.6e3}`, "", time.Hour},
		{"expires_in below a second", jsonType, `{` + good + `,"expires_in":0.5}`, "expires_in is less than one second", 0},
		{"expires_in absurdly large", jsonType, `{` + good + `,"expires_in":315360000000}`, "", maxLifetime},
		{"expires_in beyond float64", jsonType, `{` + good + `,"expires_in":1e400}`, "", maxLifetime},
		{"expires_in infinite string", jsonType, `{` + good + `,"expires_in":"Inf"}`, "expires_in is not a number", 0},
		{"expires_in hex string", jsonType, `{` + good + `,"expires_in":"0x1p10"}`, "expires_in is not a number", 0},
		{"expires_in huge string", jsonType, `{` + good + `,"expires_in":"1e400"}`, "", maxLifetime},
		{"expires_in negative beyond float64", jsonType, `{` + good + `,"expires_in":-1e400}`, "expires_in is not positive", 0},
		{"expires_in underflow", jsonType, `{` + good + `,"expires_in":1e-400}`, "expires_in is not positive", 0},
		{"expires_in boolean", jsonType, `{` + good + `,"expires_in":true}`, "expires_in is not a number", 0},
		{"expires_in object", jsonType, `{` + good + `,"expires_in":{"s":1}}`, "expires_in is not a number", 0},
		{"extra fields ignored", jsonType, `{` + good + `,"expires_in":60,"id_token":"x.y.z","nested":{"a":[1,2,{"b":null}]},"n":1e999}`, "", time.Minute},
		{"text/html", "text/html", `{` + good + `}`, "content type is not JSON", 0},
		{"text/plain", "text/plain; charset=utf-8", `{` + good + `}`, "content type is not JSON", 0},
		{"malformed content type", "application/json; charset", `{` + good + `}`, "content type is not JSON", 0},
		{"no content type", "", `{` + good + `}`, "", defaultLifetime},
		{"json with charset", "application/json; charset=utf-8", `{` + good + `,"expires_in":120}`, "", 2 * time.Minute},
		{"json suffix", "application/vnd.iris+json", `{` + good + `,"expires_in":120}`, "", 2 * time.Minute},
		{"upper-case json type", "Application/JSON", `{` + good + `,"expires_in":120}`, "", 2 * time.Minute},
		{"body is HTML", jsonType, `<html><body>access_token Bearer</body></html>`, "body is not a JSON token response", 0},
		{"body empty", jsonType, ``, "body is not a JSON token response", 0},
		{"body null", jsonType, `null`, "access_token is missing", 0},
		{"body an array", jsonType, `[{` + good + `}]`, "body is not a JSON token response", 0},
		{"body truncated", jsonType, `{` + good + `,"expires_in":36`, "body is not a JSON token response", 0},
		{"body with trailing garbage", jsonType, `{` + good + `} trailing`, "body is not a JSON token response", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, detail := ParseTokenResponse(tc.contentType, []byte(tc.body))
			if tc.wantDetail != "" {
				require.Nil(t, tok)
				require.Contains(t, detail, tc.wantDetail)
				if len(tc.body) > 20 {
					require.NotContains(t, detail, tc.body)
				}
			} else {
				require.Empty(t, detail)
				require.NotNil(t, tok)
				require.Equal(t, "at-1", tok.AccessToken)
				require.Equal(t, "Bearer", tok.TokenType, "the type is normalised")
				require.Equal(t, tc.wantLife, tok.Lifetime)
			}

			// The same answer through the client: a defined error, never
			// retried (IRIS answered, and it will answer the same again),
			// with no part of the body in its text.
			tokenURL, hits := fixedResponse(t, http.StatusOK, tc.contentType, tc.body, nil)
			h := newClientHarness()
			got, err := h.PasswordGrant(context.Background(), credentialsFor(tokenURL, clientUser), time.Second)
			if tc.wantDetail == "" {
				require.NoError(t, err)
				require.Equal(t, tc.wantLife, got.Lifetime)
				require.Equal(t, h.clock.Now(), got.ObtainedAt)
				return
			}
			e := requireClientError(t, err, KindBadResponse)
			require.Equal(t, http.StatusOK, e.Status)
			require.Equal(t, 1, e.Attempts)
			require.EqualValues(t, 1, hits.Load())
			require.False(t, e.Retryable())
			require.Contains(t, err.Error(), tc.wantDetail)
			require.Contains(t, err.Error(), "unusable response (HTTP 200)")
			if len(tc.body) > 20 {
				require.NotContains(t, err.Error(), tc.body)
			}
		})
	}
}

func TestParseTokenResponseFields(t *testing.T) {
	t.Parallel()
	tok, detail := ParseTokenResponse("application/json",
		[]byte(`{"access_token":"at-1","token_type":"Bearer","expires_in":"90","scope":"api offline_access","refresh_token":"rt-1"}`))
	require.Empty(t, detail)
	require.Equal(t, &Token{AccessToken: "at-1", TokenType: "Bearer", RefreshToken: "rt-1", Scope: "api offline_access", Lifetime: 90 * time.Second}, tok)

	// Without a scope in the answer, the token has the scope asked for.
	tokenURL, _ := fixedResponse(t, http.StatusOK, "application/json", `{"access_token":"at-1","token_type":"Bearer","expires_in":90}`, nil)
	got, err := newClientHarness().PasswordGrant(context.Background(), credentialsFor(tokenURL, clientUser), time.Second)
	require.NoError(t, err)
	require.Equal(t, "api offline_access", got.Scope)
	require.Empty(t, got.RefreshToken)
}

// requireBackoff checks each wait against exponential backoff with full
// jitter: attempt n waits between half and all of base·2ⁿ⁻¹, capped.
func requireBackoff(t *testing.T, p RetryPolicy, sleeps []time.Duration) {
	t.Helper()
	for i, d := range sleeps {
		ceiling := min(p.BaseDelay<<i, p.MaxDelay)
		require.GreaterOrEqual(t, d, ceiling/2, "wait %d", i+1)
		require.LessOrEqual(t, d, ceiling, "wait %d", i+1)
	}
}

// dropConnections makes the emulator hang up on the first n /token requests
// without answering, after reading them: a network error after the request
// was sent.
func dropConnections(t *testing.T, srv *iristest.Server, n int32) {
	var dropped atomic.Int32
	srv.SetResponseOverride(func(w http.ResponseWriter, r *http.Request) bool {
		if dropped.Add(1) > n {
			return false
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return false
		}
		_ = conn.Close()
		return true
	})
}

func TestClientRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(t *testing.T, srv *iristest.Server)
		// wantErr is the final error's text, empty when the third attempt
		// succeeds.
		wantKind ErrorKind
		wantErr  []string
	}{
		{"5xx then success", func(t *testing.T, srv *iristest.Server) {
			srv.FailNext(1, iristest.Fault{Status: 500})
			srv.FailNext(1, iristest.Fault{Status: 502})
		}, 0, nil},
		{"429 then success", func(t *testing.T, srv *iristest.Server) {
			srv.FailNext(2, iristest.Fault{Status: 429})
		}, 0, nil},
		{"connection dropped then success", func(t *testing.T, srv *iristest.Server) {
			dropConnections(t, srv, 2)
		}, 0, nil},
		{"5xx throughout reports the last cause", func(t *testing.T, srv *iristest.Server) {
			srv.FailNext(1, iristest.Fault{Status: 500})
			srv.FailNext(1, iristest.Fault{Status: 502})
			srv.FailNext(1, iristest.Fault{Status: 504})
		}, KindUnavailable, []string{"IRIS is unavailable: HTTP 504 after 3 attempts"}},
		{"429 throughout", func(t *testing.T, srv *iristest.Server) {
			srv.SetFault(&iristest.Fault{Status: 429})
		}, KindUnavailable, []string{"HTTP 429 (rate limited) after 3 attempts"}},
		{"connection dropped throughout", func(t *testing.T, srv *iristest.Server) {
			dropConnections(t, srv, 3)
		}, KindUnreachable, []string{"could not be reached", "after 3 attempts"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newClientEmulator(t)
			tc.setup(t, srv)
			h := newClientHarness()
			tok, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
			require.Equal(t, 3, srv.Stats().Requests)
			require.Len(t, h.slept(), 2)
			requireBackoff(t, h.Retry, h.slept())
			if tc.wantKind == 0 {
				require.NoError(t, err)
				active, _ := srv.Introspect(tok.AccessToken)
				require.True(t, active)
				return
			}
			e := requireClientError(t, err, tc.wantKind)
			require.Equal(t, 3, e.Attempts)
			require.True(t, e.Retryable())
			for _, want := range tc.wantErr {
				require.Contains(t, err.Error(), want)
			}
		})
	}

	t.Run("unreachable host", func(t *testing.T) {
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		h := newClientHarness()
		_, err := h.PasswordGrant(context.Background(), credentialsFor(closed.URL+"/token", clientUser), time.Second)
		e := requireClientError(t, err, KindUnreachable)
		require.Equal(t, 3, e.Attempts)
		require.False(t, e.Sent)
		require.Contains(t, err.Error(), "after 3 attempts")
		require.Len(t, h.slept(), 2)
	})

	t.Run("backoff is capped", func(t *testing.T) {
		srv := newClientEmulator(t)
		srv.SetFault(&iristest.Fault{Status: 503})
		h := newClientHarness()
		h.Retry = RetryPolicy{MaxAttempts: 6, BaseDelay: 300 * time.Millisecond, MaxDelay: time.Second, Budget: 20 * time.Second}
		_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
		require.Equal(t, 6, requireClientError(t, err, KindUnavailable).Attempts)
		require.Len(t, h.slept(), 5)
		requireBackoff(t, h.Retry, h.slept())
		for _, d := range h.slept() {
			require.LessOrEqual(t, d, time.Second)
		}
	})
}

func TestClientHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cases := []struct {
		name       string
		retryAfter string
		budget     time.Duration
		// wantSleeps nil means one backoff wait; empty means no retry.
		wantSleeps []time.Duration
	}{
		{"seconds", "7", 0, []time.Duration{7 * time.Second}},
		{"HTTP date", clock.Now().Add(9 * time.Second).UTC().Format(http.TimeFormat), 0, []time.Duration{9 * time.Second}},
		{"shorter than the backoff", "0", 0, nil},
		{"date in the past", clock.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0, nil},
		{"unparseable", "soon", 0, nil},
		{"beyond the budget", "60", 5 * time.Second, []time.Duration{}},
		{"date beyond the budget", clock.Now().Add(time.Minute).UTC().Format(http.TimeFormat), 5 * time.Second, []time.Duration{}},
		// 10¹⁰ s overflows a Duration into a negative one: it must still
		// mean "not within the budget", not "retry now".
		{"absurdly large", "10000000000", 0, []time.Duration{}},
		{"beyond int64", "99999999999999999999999", 0, []time.Duration{}},
	}
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%d %s", status, tc.name), func(t *testing.T) {
				srv := newClientEmulator(t)
				srv.FailNext(1, iristest.Fault{Status: status, RetryAfter: tc.retryAfter})
				h := newClientHarness()
				h.clock = clock
				h.Now = clock.Now
				if tc.budget > 0 {
					h.Retry.Budget = tc.budget
				}
				_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
				switch {
				case tc.wantSleeps == nil:
					require.NoError(t, err)
					require.Len(t, h.slept(), 1)
					requireBackoff(t, h.Retry, h.slept())
				case len(tc.wantSleeps) == 0:
					// Waiting would outlive the budget: the answer is the
					// real cause at once, not a timeout later.
					e := requireClientError(t, err, KindUnavailable)
					require.Equal(t, status, e.Status)
					require.Equal(t, 1, e.Attempts)
					require.Greater(t, e.RetryAfter, h.Retry.Budget)
					require.Empty(t, h.slept())
					require.Equal(t, 1, srv.Stats().Requests)
					require.Contains(t, err.Error(), fmt.Sprintf("HTTP %d", status))
					require.NotContains(t, err.Error(), "attempts")
				default:
					require.NoError(t, err)
					require.Equal(t, tc.wantSleeps, h.slept())
				}
			})
		}
	}
}

func TestClientNeverRetriesRejections(t *testing.T) {
	t.Parallel()
	oauthFault := func(status int, code string) func(*iristest.Server, *credentials) {
		return func(srv *iristest.Server, _ *credentials) {
			srv.FailNext(1, iristest.Fault{Status: status, ContentType: "application/json",
				Body: `{"error":"` + code + `","error_description":"Refused by the test."}`})
		}
	}
	cases := []struct {
		code       string
		wantStatus int
		setup      func(*iristest.Server, *credentials)
	}{
		{"invalid_grant", 400, func(_ *iristest.Server, c *credentials) { c.Password = "wrong-password" }},
		{"invalid_client", 401, func(_ *iristest.Server, c *credentials) { c.ClientSecret = "wrong-secret" }},
		{"invalid_scope", 400, func(_ *iristest.Server, c *credentials) { c.Scopes = []string{"everything"} }},
		{"unauthorized_client", 400, oauthFault(400, "unauthorized_client")},
		{"unsupported_grant_type", 400, oauthFault(400, "unsupported_grant_type")},
		{"invalid_request", 400, oauthFault(400, "invalid_request")},
		{"invalid_client", 403, oauthFault(403, "invalid_client")},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %d", tc.code, tc.wantStatus), func(t *testing.T) {
			srv := newClientEmulator(t)
			creds := credentialsFor(srv.TokenURL, clientUser)
			tc.setup(srv, &creds)
			h := newClientHarness()
			_, err := h.PasswordGrant(context.Background(), creds, time.Second)
			e := requireClientError(t, err, KindRejected)
			require.Equal(t, tc.code, e.Code)
			require.Equal(t, tc.wantStatus, e.Status)
			require.Equal(t, 1, e.Attempts)
			require.False(t, e.Retryable())
			require.False(t, e.MayHaveActed())
			require.True(t, IsRejected(err, tc.code))
			require.Equal(t, 1, srv.Stats().Requests)
			require.Empty(t, h.slept())
			require.Contains(t, err.Error(), "IRIS rejected the password grant: "+tc.code)
			require.NotContains(t, err.Error(), "attempts")
		})
	}

	t.Run("refresh token refused", func(t *testing.T) {
		srv := newClientEmulator(t)
		h := newClientHarness()
		_, err := h.RefreshGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), "rt-unknown", time.Second)
		e := requireClientError(t, err, KindRejected)
		require.Equal(t, GrantRefreshToken, e.Grant)
		require.True(t, IsRejected(err, "invalid_grant"))
		require.Equal(t, 1, srv.Stats().Requests)
	})

	t.Run("401 and 403 without an OAuth error are rejections", func(t *testing.T) {
		for _, status := range []int{401, 403} {
			for _, body := range []string{"", "<html>no</html>"} {
				tokenURL, hits := fixedResponse(t, status, "text/html", body, nil)
				_, err := newClientHarness().PasswordGrant(context.Background(), credentialsFor(tokenURL, clientUser), time.Second)
				e := requireClientError(t, err, KindRejected)
				require.Equal(t, status, e.Status)
				require.Empty(t, e.Code)
				require.EqualValues(t, 1, hits.Load(), "a refusal is never retried")
				require.True(t, IsClientRefused(err))
				require.True(t, IsRejected(err))
				require.False(t, IsRejected(err, "invalid_client"), "no code was sent, none is made up")
				require.Equal(t, fmt.Sprintf("IRIS rejected the password grant: HTTP %d without an OAuth error", status), err.Error())
			}
		}
		_, err := newClientHarness().PasswordGrant(context.Background(), credentialsFor(newClientEmulator(t).TokenURL, clientUser), time.Second)
		require.NoError(t, err)
		require.False(t, IsClientRefused(err))
	})

	t.Run("other 4xx answers are not rejections", func(t *testing.T) {
		for _, status := range []int{400, 404, 405} {
			tokenURL, hits := fixedResponse(t, status, "text/html", "<html>no</html>", nil)
			_, err := newClientHarness().PasswordGrant(context.Background(), credentialsFor(tokenURL, clientUser), time.Second)
			e := requireClientError(t, err, KindBadResponse)
			require.Equal(t, status, e.Status)
			require.EqualValues(t, 1, hits.Load())
			require.Contains(t, err.Error(), "not an OAuth error response")
		}
	})
}

func TestClientTimeouts(t *testing.T) {
	t.Run("each attempt is bounded", func(t *testing.T) {
		srv := newClientEmulator(t)
		srv.SetFault(&iristest.Fault{Delay: time.Hour})
		h := newClientHarness()
		_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), 100*time.Millisecond)
		e := requireClientError(t, err, KindTimeout)
		require.Equal(t, 3, e.Attempts)
		require.True(t, errors.Is(err, context.DeadlineExceeded))
		require.Equal(t, 3, srv.Stats().Requests)
		require.Equal(t, "IRIS did not answer in time after 3 attempts", err.Error())
	})

	t.Run("the whole call stays within the budget", func(t *testing.T) {
		srv := newClientEmulator(t)
		srv.SetFault(&iristest.Fault{Delay: time.Hour})
		h := newClientHarness()
		h.Retry = RetryPolicy{MaxAttempts: 10, BaseDelay: 10 * time.Millisecond, Budget: 300 * time.Millisecond}
		start := time.Now()
		_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), 10*time.Second)
		elapsed := time.Since(start)
		requireClientError(t, err, KindTimeout)
		require.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
		require.Less(t, elapsed, 2*time.Second, "the budget did not bound the call")
	})

	t.Run("the budget bounds real waits too", func(t *testing.T) {
		srv := newClientEmulator(t)
		srv.SetFault(&iristest.Fault{Status: 503})
		h := newClientHarness()
		h.Sleep = nil // the real timer, which the budget must cut short
		h.Retry = RetryPolicy{MaxAttempts: 10, BaseDelay: 200 * time.Millisecond, MaxDelay: 200 * time.Millisecond, Budget: 500 * time.Millisecond}
		start := time.Now()
		_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
		elapsed := time.Since(start)
		// On a loaded machine the budget may end during an attempt rather
		// than during a wait: either way it bounded the call.
		var e *Error
		require.ErrorAs(t, err, &e)
		require.Contains(t, []ErrorKind{KindUnavailable, KindTimeout}, e.Kind, "%v", err)
		require.Less(t, e.Attempts, 10)
		require.Less(t, elapsed, 2*time.Second)
	})
}

func TestClientDoesNotBufferHugeResponses(t *testing.T) {
	const size = 100 << 20
	written := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		defer func() {
			select {
			case written <- n:
			default:
			}
		}()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.WriteHeader(http.StatusOK)
		// A token response whose access_token never ends.
		m, err := io.WriteString(w, `{"access_token":"`)
		n += int64(m)
		chunk := []byte(strings.Repeat("a", 64<<10))
		for err == nil && n < size {
			m, err = w.Write(chunk[:min(int64(len(chunk)), size-n)])
			n += int64(m)
		}
	}))
	defer srv.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h := newClientHarness()
	_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.URL+"/token", clientUser), 30*time.Second)
	e := requireClientError(t, err, KindBadResponse)
	require.Contains(t, err.Error(), "larger than")
	require.Equal(t, http.StatusOK, e.Status)
	require.Equal(t, 1, e.Attempts, "a response that is too large is not retried")

	select {
	case n := <-written:
		require.Less(t, n, int64(size/4), "the client read on after the bound")
	case <-time.After(20 * time.Second):
		t.Fatal("the server is still writing: the client kept the connection open")
	}
	runtime.ReadMemStats(&after)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(10<<20), "the answer was buffered")
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-stolen","token_type":"Bearer"}`)
	}))
	defer other.Close()
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			tokenURL, hits := fixedResponse(t, status, "text/html", "", map[string]string{"Location": other.URL + "/token"})
			h := newClientHarness()
			_, err := h.PasswordGrant(context.Background(), credentialsFor(tokenURL, clientUser), time.Second)
			e := requireClientError(t, err, KindBadResponse)
			require.Equal(t, status, e.Status)
			require.Contains(t, err.Error(), "redirects are never followed")
			require.EqualValues(t, 1, hits.Load())
			require.Zero(t, elsewhere.Load(), "the credentials went to the redirect target")
		})
	}
}

// issueRefreshToken runs a password grant and returns its refresh token.
func issueRefreshToken(t *testing.T, h *clientHarness, srv *iristest.Server) string {
	t.Helper()
	tok, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
	require.NoError(t, err)
	require.NotEmpty(t, tok.RefreshToken)
	srv.ResetStats()
	return tok.RefreshToken
}

func refreshRequests(srv *iristest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.GrantType == "refresh_token" {
			n++
		}
	}
	return n
}

// A refresh token may be rotated by IRIS although the answer never arrived;
// sending it again would be a reuse. So the client retries a refresh only
// when IRIS cannot have acted on it, and otherwise reports a retryable error
// and leaves the decision to the caller.
func TestClientRefreshWhoseOutcomeIsUnknown(t *testing.T) {
	t.Parallel()
	lost := []struct {
		name string
		// fault sets the emulator up and returns the token URL to use.
		fault    func(t *testing.T, srv *iristest.Server) string
		wantKind ErrorKind
	}{
		{"answer held back past the attempt timeout", func(t *testing.T, srv *iristest.Server) string {
			srv.FailNext(1, iristest.Fault{AfterHandling: true, Delay: time.Hour})
			return srv.TokenURL
		}, KindTimeout},
		{"500 after handling", func(t *testing.T, srv *iristest.Server) string {
			srv.FailNext(1, iristest.Fault{AfterHandling: true, Status: 500})
			return srv.TokenURL
		}, KindUnavailable},
		{"502 after handling", func(t *testing.T, srv *iristest.Server) string {
			srv.FailNext(1, iristest.Fault{AfterHandling: true, Status: 502})
			return srv.TokenURL
		}, KindUnavailable},
		{"503 after handling", func(t *testing.T, srv *iristest.Server) string {
			srv.FailNext(1, iristest.Fault{AfterHandling: true, Status: 503})
			return srv.TokenURL
		}, KindUnavailable},
		{"connection dropped after handling", func(t *testing.T, srv *iristest.Server) string {
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				srv.Handler().ServeHTTP(httptest.NewRecorder(), r)
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					_ = conn.Close()
				}
			}))
			t.Cleanup(front.Close)
			return front.URL + "/token"
		}, KindUnreachable},
	}
	for _, tc := range lost {
		t.Run(tc.name, func(t *testing.T) {
			srv := newClientEmulator(t)
			h := newClientHarness()
			rt := issueRefreshToken(t, h, srv)
			tokenURL := tc.fault(t, srv)
			_, err := h.RefreshGrant(context.Background(), credentialsFor(tokenURL, clientUser), rt, 200*time.Millisecond)
			e := requireClientError(t, err, tc.wantKind)
			require.True(t, e.Retryable(), "IRIS may answer next time")
			require.True(t, e.MayHaveActed())
			require.Equal(t, 1, e.Attempts, "the refresh token was sent again")
			require.Equal(t, 1, refreshRequests(srv))
			require.Zero(t, srv.Stats().RefreshReuse)
			require.Empty(t, h.slept())

			// IRIS did act: the token is spent, and sending it again is the
			// reuse the client avoided.
			_, err = h.RefreshGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), rt, time.Second)
			require.True(t, IsRejected(err, "invalid_grant"), "%v", err)
			require.Equal(t, 1, srv.Stats().RefreshReuse)
		})
	}

	// The same failures for a password grant are retried: a lost password
	// grant costs nothing but an unused session at IRIS.
	t.Run("password grant after handling is retried", func(t *testing.T) {
		srv := newClientEmulator(t)
		srv.FailNext(1, iristest.Fault{AfterHandling: true, Status: 500})
		h := newClientHarness()
		_, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
		require.NoError(t, err)
		require.Equal(t, 2, srv.Stats().PasswordGrants)
	})

	// A 429 says IRIS turned the request away before processing it.
	for _, status := range []int{http.StatusTooManyRequests} {
		t.Run(fmt.Sprintf("%d is retried", status), func(t *testing.T) {
			srv := newClientEmulator(t)
			h := newClientHarness()
			rt := issueRefreshToken(t, h, srv)
			srv.FailNext(2, iristest.Fault{Status: status})
			tok, err := h.RefreshGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), rt, time.Second)
			require.NoError(t, err)
			require.NotEqual(t, rt, tok.RefreshToken)
			require.Equal(t, 3, refreshRequests(srv))
			require.Zero(t, srv.Stats().RefreshReuse)
			require.Len(t, h.slept(), 2)
		})
	}

	t.Run("never sent is retried", func(t *testing.T) {
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		h := newClientHarness()
		_, err := h.RefreshGrant(context.Background(), credentialsFor(closed.URL+"/token", clientUser), "rt-x", time.Second)
		e := requireClientError(t, err, KindUnreachable)
		require.False(t, e.MayHaveActed())
		require.Equal(t, 3, e.Attempts)
	})
}

func TestClientRevoke(t *testing.T) {
	t.Parallel()
	t.Run("success", func(t *testing.T) {
		srv := newClientEmulator(t)
		h := newClientHarness()
		tok, err := h.PasswordGrant(context.Background(), credentialsFor(srv.TokenURL, clientUser), time.Second)
		require.NoError(t, err)
		creds := credentialsFor(srv.TokenURL, clientUser)
		creds.RevocationURL = srv.RevocationURL
		require.NoError(t, h.Revoke(context.Background(), creds, tok.AccessToken, "access_token", time.Second))
		active, _ := srv.Introspect(tok.AccessToken)
		require.False(t, active)
		require.Equal(t, 1, srv.Stats().Revocations)
	})

	t.Run("no revocation_url", func(t *testing.T) {
		h := newClientHarness()
		require.NoError(t, h.Revoke(context.Background(), credentialsFor("https://iris.invalid/token", clientUser), "at-x", "", time.Second))
	})

	cases := []struct {
		name     string
		status   int
		wantKind ErrorKind
	}{
		{"503", http.StatusServiceUnavailable, KindBadResponse},
		{"500", http.StatusInternalServerError, KindBadResponse},
		{"400", http.StatusBadRequest, KindBadResponse},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			revocationURL, hits := fixedResponse(t, tc.status, "application/json", `{"error":"unsupported_token_type"}`, nil)
			creds := credentialsFor("https://iris.invalid/token", clientUser)
			creds.RevocationURL = revocationURL
			h := newClientHarness()
			err := h.Revoke(context.Background(), creds, "at-x", "access_token", time.Second)
			e := requireClientError(t, err, tc.wantKind)
			require.Equal(t, tc.status, e.Status)
			require.Equal(t, GrantRevocation, e.Grant)
			require.EqualValues(t, 1, hits.Load(), "revocation is never retried")
			require.Empty(t, h.slept())
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		creds := credentialsFor("https://iris.invalid/token", clientUser)
		creds.RevocationURL = closed.URL + "/revoke"
		h := newClientHarness()
		err := h.Revoke(context.Background(), creds, "at-x", "access_token", time.Second)
		e := requireClientError(t, err, KindUnreachable)
		require.Equal(t, 1, e.Attempts)
		require.Empty(t, h.slept())
	})

	t.Run("hangs", func(t *testing.T) {
		release := make(chan struct{})
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release)
		creds := credentialsFor("https://iris.invalid/token", clientUser)
		creds.RevocationURL = srv.URL + "/revoke"
		err := newClientHarness().Revoke(context.Background(), creds, "at-x", "access_token", 100*time.Millisecond)
		requireClientError(t, err, KindTimeout)
		require.EqualValues(t, 1, hits.Load())
	})
}

// echoServer answers every request with whatever it is set to, after
// substituting the request's own form values and Basic credentials: an
// endpoint that reflects what it was sent.
func echoServer(t *testing.T, status int, contentType, template string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, secret, _ := r.BasicAuth()
		body := strings.NewReplacer(
			"{secret}", secret, "{id}", id,
			"{password}", r.PostForm.Get("password"),
			"{refresh}", r.PostForm.Get("refresh_token"),
			"{token}", r.PostForm.Get("token"),
			"{basic}", strings.TrimPrefix(r.Header.Get("Authorization"), "Basic "),
			"{escaped}", url.QueryEscape(secret)+" "+url.QueryEscape(r.PostForm.Get("password")),
		).Replace(template)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token"
}

func TestClientErrorsNeverContainSecrets(t *testing.T) {
	t.Parallel()
	const (
		refreshToken = "rt-refresh-token-Vb6nM2"
		accessToken  = "at-access-token-Qw8eR5"
	)
	// What the client sent it may not show; an access token it never sent
	// but got in a token response it may not show either.
	everything := `{secret} {password} {refresh} {token} {basic} {escaped}`
	oauthEcho := `{"error":"invalid_request","error_description":"you sent ` + everything + `"}`
	oddCodeEcho := `{"error":"bad_{password}_{secret}_{refresh}","error_description":"` + strings.Repeat("x", 190) + `{password}"}`
	tokenEcho := `{"access_token":"` + accessToken + `","token_type":"MAC","refresh_token":"{refresh}","password":"{password}","x":"{secret}"}`

	type scenario struct {
		name   string
		target func(t *testing.T) string
	}
	scenarios := []scenario{
		{"rejection echoing the request", func(t *testing.T) string {
			return echoServer(t, 400, "application/json", oauthEcho)
		}},
		{"rejection with an odd code, truncated", func(t *testing.T) string {
			return echoServer(t, 400, "application/json", oddCodeEcho)
		}},
		{"5xx echoing the request", func(t *testing.T) string {
			return echoServer(t, 503, "application/json", oauthEcho)
		}},
		{"HTML error page", func(t *testing.T) string {
			return echoServer(t, 404, "text/html", "<html>"+everything+"</html>")
		}},
		{"unusable token response", func(t *testing.T) string {
			return echoServer(t, 200, "application/json", tokenEcho)
		}},
		{"HTML token response", func(t *testing.T) string {
			return echoServer(t, 200, "text/html", tokenEcho)
		}},
		{"redirect", func(t *testing.T) string {
			url, _ := fixedResponse(t, 302, "text/html", everything, map[string]string{"Location": "https://evil.invalid/?" + clientUser.Password})
			return url
		}},
		{"hangs", func(t *testing.T) string {
			srv := newClientEmulator(t)
			srv.SetFault(&iristest.Fault{Delay: time.Hour})
			return srv.TokenURL
		}},
		{"unreachable", func(t *testing.T) string {
			closed := httptest.NewServer(http.NotFoundHandler())
			closed.Close()
			return closed.URL + "/token"
		}},
		{"emulator refusing", func(t *testing.T) string {
			srv := newClientEmulator(t)
			srv.AddUser(iristest.User{ClientID: clientUser.ClientID, ClientSecret: clientUser.ClientSecret, Username: clientUser.Username, Password: "changed"})
			return srv.TokenURL
		}},
	}
	forbidden := []string{clientUser.ClientSecret, clientUser.Password, refreshToken, accessToken,
		base64.StdEncoding.EncodeToString([]byte(clientUser.ClientID + ":" + clientUser.ClientSecret)),
		url.QueryEscape(clientUser.ClientSecret), url.QueryEscape(clientUser.Password)}
	// A revocation answered 200 succeeds, with nothing to check.
	checkIfFailed := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			return
		}
		for _, text := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err)} {
			for _, secret := range forbidden {
				require.NotContains(t, text, secret)
				require.NotContains(t, text, secret[:len(secret)/2], "part of a secret")
				require.NotContains(t, text, secret[len(secret)/2:], "part of a secret")
			}
		}
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			target := sc.target(t)
			creds := credentialsFor(target, clientUser)
			creds.RevocationURL = target
			h := newClientHarness()
			_, err := h.PasswordGrant(context.Background(), creds, 100*time.Millisecond)
			require.Error(t, err)
			checkIfFailed(t, err)
			_, err = h.RefreshGrant(context.Background(), creds, refreshToken, 100*time.Millisecond)
			require.Error(t, err)
			checkIfFailed(t, err)
			checkIfFailed(t, h.Revoke(context.Background(), creds, accessToken, "access_token", 100*time.Millisecond))
			checkIfFailed(t, h.Revoke(context.Background(), creds, refreshToken, "refresh_token", 100*time.Millisecond))
		})
	}

	t.Run("the standard code survives a secret inside it", func(t *testing.T) {
		creds := credentialsFor(echoServer(t, 400, "application/json", `{"error":"invalid_grant","error_description":"no"}`), clientUser)
		creds.Password = "grant"
		_, err := newClientHarness().PasswordGrant(context.Background(), creds, time.Second)
		require.True(t, IsRejected(err, "invalid_grant"), "%v", err)
	})
}

func newTestClock() *iristest.Clock { return iristest.NewClock(time.Now().Truncate(time.Second)) }

// API keys and app installations send their client credentials in the form
// body, exactly as Trackunit documents it, with no Authorization header;
// their secret is redacted from errors in that form too.
func TestClientCredentialsGrantAsDocumented(t *testing.T) {
	t.Parallel()
	key := iristest.APIKey{ClientID: "0oa-key", ClientSecret: "k3y+secret%20 spaced", AllowedScopes: []string{"iris.assets.read"}}
	srv := iristest.NewServer()
	t.Cleanup(srv.Close)
	srv.AddAPIKey(key)
	endpoint := Endpoint{TokenURL: srv.TokenV2URL, ClientID: key.ClientID, ClientSecret: key.ClientSecret, Auth: AuthInBody, AttemptTimeout: time.Second}

	res, err := newClientHarness().Exchange(context.Background(), endpoint.ClientCredentialsGrant([]string{"iris.assets.read"}))
	require.NoError(t, err)
	require.Equal(t, 1200*time.Second, res.Token.Lifetime)
	require.Empty(t, res.Token.RefreshToken)
	require.Equal(t, RefreshTokenUnused, res.RefreshOutcome)
	require.Zero(t, srv.Stats().Rejected)

	var got *http.Request
	var form url.Values
	recorder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		_ = r.ParseForm()
		form = r.PostForm
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_scope","error_description":"asked `+url.QueryEscape(key.ClientSecret)+` and `+key.ClientSecret+`"}`)
	}))
	t.Cleanup(recorder.Close)
	endpoint.TokenURL = recorder.URL + "/token/v2"
	_, err = newClientHarness().Exchange(context.Background(), endpoint.ClientCredentialsGrant([]string{"a", "b"}))
	require.True(t, IsRejected(err, "invalid_scope"))
	require.NotContains(t, err.Error(), key.ClientSecret)
	require.NotContains(t, err.Error(), url.QueryEscape(key.ClientSecret))
	require.Empty(t, got.Header.Get("Authorization"))
	require.Equal(t, "application/x-www-form-urlencoded", got.Header.Get("Content-Type"))
	require.Equal(t, url.Values{"grant_type": {"client_credentials"}, "client_id": {key.ClientID}, "client_secret": {key.ClientSecret}, "scope": {"a b"}}, form)
}

package iris

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"
)

// This file is the IRIS OAuth client. It knows nothing of Vault: it takes
// plain settings, speaks the token endpoint's protocol, and classifies every
// failure once so that the Vault side can turn it into a response.

const (
	// DefaultTokenURL is the IRIS authorization server's token endpoint.
	DefaultTokenURL = "https://auth.trackunit.com/token"

	// maxResponseBytes bounds what we read of any IRIS answer. Token
	// responses are a few KiB even with JWT access tokens; anything larger is
	// not a token response and must not be buffered.
	maxResponseBytes = 128 << 10

	// defaultLifetime is assumed when IRIS omits expires_in. IRIS documents
	// 3600 s, but a short guess is the safe one: a lease or cached token that
	// ends early costs one extra grant, one that ends late hands out a dead
	// token.
	defaultLifetime = 5 * time.Minute

	// maxLifetime caps absurd expires_in values for the same reason.
	maxLifetime = 24 * time.Hour

	maxDescriptionLen = 200

	// maxRetryAfter bounds a Retry-After value before it is turned into a
	// Duration, which would overflow for absurd values and wrap round to
	// "retry now". Anything this long is beyond every budget anyway.
	maxRetryAfter = 24 * time.Hour
)

// Credentials are what the client needs to act for one IRIS API user.
type Credentials struct {
	TokenURL      string
	RevocationURL string
	ClientID      string
	ClientSecret  string
	Username      string
	Password      string
	Scopes        []string
}

// Token is a successful token response.
type Token struct {
	AccessToken  string
	TokenType    string
	RefreshToken string
	Scope        string
	// Lifetime is expires_in as IRIS sent it (or the documented default),
	// counted from ObtainedAt, which is taken before the request is sent so
	// that network latency never makes us believe a token lives longer than
	// it does.
	Lifetime   time.Duration
	ObtainedAt time.Time
}

// ExpiresAt is when IRIS will stop accepting the access token.
func (t *Token) ExpiresAt() time.Time { return t.ObtainedAt.Add(t.Lifetime) }

// Grant names the OAuth request an error came from.
type Grant string

const (
	GrantPassword     Grant = "password"
	GrantRefreshToken Grant = "refresh_token"
	GrantRevocation   Grant = "revocation"
)

// ErrorKind classifies a failed call by who can fix it.
type ErrorKind int

const (
	// KindRejected: IRIS answered with an OAuth error; the credentials,
	// scopes or refresh token are at fault and retrying will not help.
	KindRejected ErrorKind = iota + 1
	// KindUnreachable: no HTTP answer at all (DNS, connection, TLS).
	KindUnreachable
	// KindTimeout: IRIS did not answer in time.
	KindTimeout
	// KindUnavailable: IRIS answered 5xx or 429.
	KindUnavailable
	// KindBadResponse: IRIS answered, but not with anything we can use.
	KindBadResponse
)

func (k ErrorKind) String() string {
	switch k {
	case KindRejected:
		return "rejected"
	case KindUnreachable:
		return "unreachable"
	case KindTimeout:
		return "timeout"
	case KindUnavailable:
		return "unavailable"
	case KindBadResponse:
		return "bad response"
	}
	return "unknown"
}

// Error is every failure the client returns. Its text never contains a
// secret, a token or a raw response body: only the OAuth error code, a
// sanitised error_description, the HTTP status and the network cause.
type Error struct {
	Kind        ErrorKind
	Grant       Grant
	Code        string // OAuth "error", when IRIS sent one
	Description string // OAuth "error_description", sanitised
	Status      int    // HTTP status, 0 when there was no answer
	Attempts    int
	RetryAfter  time.Duration // what IRIS asked for on the last 429/503
	Detail      string        // what was wrong with a bad response
	Err         error         // the network cause, for errors.Is
	// Sent is set once the request was written out (or answered): from then
	// on IRIS may have acted on it, whatever became of the answer.
	Sent bool
}

func (e *Error) Error() string {
	var b strings.Builder
	switch e.Kind {
	case KindRejected:
		fmt.Fprintf(&b, "IRIS rejected the %s grant: %s", e.Grant, e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	case KindUnreachable:
		fmt.Fprintf(&b, "IRIS could not be reached")
		if e.Err != nil {
			fmt.Fprintf(&b, ": %s", e.Err)
		}
	case KindTimeout:
		fmt.Fprintf(&b, "IRIS did not answer in time")
	case KindUnavailable:
		fmt.Fprintf(&b, "IRIS is unavailable: HTTP %d", e.Status)
		if e.Status == http.StatusTooManyRequests {
			b.WriteString(" (rate limited)")
		}
	case KindBadResponse:
		fmt.Fprintf(&b, "IRIS answered with an unusable response")
		if e.Status != 0 {
			fmt.Fprintf(&b, " (HTTP %d)", e.Status)
		}
		if e.Detail != "" {
			fmt.Fprintf(&b, ": %s", e.Detail)
		}
	default:
		b.WriteString("IRIS request failed")
	}
	// Failures that retries could have cured say how hard we tried; a
	// rejection or a bad answer is never retried, so a count adds nothing.
	switch {
	case e.Retryable() && e.Attempts == 1 && e.Grant == GrantRefreshToken && e.MayHaveActed():
		b.WriteString(" after 1 attempt (not retried: IRIS may already have used the refresh token)")
	case e.Retryable() && e.Attempts == 1:
		b.WriteString(" after 1 attempt")
	case e.Attempts > 1:
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether trying again later may succeed.
func (e *Error) Retryable() bool {
	return e.Kind == KindUnreachable || e.Kind == KindTimeout || e.Kind == KindUnavailable
}

// MayHaveActed reports whether IRIS may have carried out the request even
// though the call failed, so that a refresh token sent with it may already be
// spent. Only a request that never left, an OAuth rejection, and the two
// answers that by definition come before any processing (429, 503) rule it
// out.
func (e *Error) MayHaveActed() bool {
	if !e.Sent {
		return false
	}
	switch e.Kind {
	case KindRejected:
		return false
	case KindUnavailable:
		return e.Status != http.StatusTooManyRequests && e.Status != http.StatusServiceUnavailable
	}
	return true
}

// IsRejected reports whether err is an OAuth rejection with one of codes
// (any code when none are given).
func IsRejected(err error, codes ...string) bool {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindRejected {
		return false
	}
	if len(codes) == 0 {
		return true
	}
	for _, c := range codes {
		if e.Code == c {
			return true
		}
	}
	return false
}

// RetryPolicy bounds how hard the client tries. The zero value means one
// attempt.
type RetryPolicy struct {
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	// Budget bounds the whole call, retries and waits included, so that a
	// failing IRIS answers the Vault caller well inside Vault's own request
	// timeout.
	Budget time.Duration
}

// DefaultRetryPolicy keeps the whole call under 30 s: Vault's default request
// timeout is 90 s, and a caller waiting for a token is better served by a
// clear error than by a hang.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts: 4,
	BaseDelay:   250 * time.Millisecond,
	MaxDelay:    4 * time.Second,
	Budget:      30 * time.Second,
}

// Client talks to IRIS token endpoints. One Client serves every API user and
// every mount; it holds no credentials.
type Client struct {
	HTTP   *http.Client
	Retry  RetryPolicy
	Logger hclog.Logger
	// Now and Sleep are the client's view of time, replaceable in tests.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// NewHTTPClient returns the HTTP client the plugin uses for IRIS: it never
// follows redirects (a redirect would carry the Basic credentials to another
// URL), and bounds connection set-up; per-request timeouts come from the
// caller's context.
func NewHTTPClient() *http.Client {
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// NewClient returns a client with the plugin's defaults.
func NewClient(logger hclog.Logger) *Client {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Client{HTTP: NewHTTPClient(), Retry: DefaultRetryPolicy, Logger: logger}
}

// PasswordGrant runs the resource-owner password grant for creds. Each
// attempt is bounded by attemptTimeout.
func (c *Client) PasswordGrant(ctx context.Context, creds Credentials, attemptTimeout time.Duration) (*Token, error) {
	form := url.Values{
		"grant_type": {string(GrantPassword)},
		"username":   {creds.Username},
		"password":   {creds.Password},
	}
	if len(creds.Scopes) > 0 {
		form.Set("scope", strings.Join(creds.Scopes, " "))
	}
	return c.tokenRequest(ctx, creds, GrantPassword, form, attemptTimeout)
}

// RefreshGrant trades refreshToken for a new access token and, at IRIS, a
// new refresh token. IRIS may consume the old one even when its answer is
// lost, so the request is retried only while IRIS cannot have acted on it;
// after any other failure, (*Error).MayHaveActed tells the caller whether
// the token may be spent (sending it again would then be a reuse).
func (c *Client) RefreshGrant(ctx context.Context, creds Credentials, refreshToken string, attemptTimeout time.Duration) (*Token, error) {
	form := url.Values{
		"grant_type":    {string(GrantRefreshToken)},
		"refresh_token": {refreshToken},
	}
	return c.tokenRequest(ctx, creds, GrantRefreshToken, form, attemptTimeout)
}

// Revoke asks the RFC 7009 revocation endpoint to revoke token. It makes a
// single attempt: callers use it on a best-effort basis.
func (c *Client) Revoke(ctx context.Context, creds Credentials, token, tokenTypeHint string, timeout time.Duration) error {
	if creds.RevocationURL == "" {
		return nil
	}
	form := url.Values{"token": {token}}
	if tokenTypeHint != "" {
		form.Set("token_type_hint", tokenTypeHint)
	}
	attemptCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	status, _, _, err := c.post(attemptCtx, creds, creds.RevocationURL, form)
	if err != nil {
		e := classifyTransportError(GrantRevocation, err, attemptCtx)
		e.Attempts = 1
		return e
	}
	if status != http.StatusOK {
		return &Error{Kind: KindBadResponse, Grant: GrantRevocation, Status: status, Attempts: 1, Detail: "revocation endpoint did not answer 200"}
	}
	return nil
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) logger() hclog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return hclog.NewNullLogger()
}

func (c *Client) tokenRequest(ctx context.Context, creds Credentials, grant Grant, form url.Values, attemptTimeout time.Duration) (*Token, error) {
	policy := c.Retry
	if policy.MaxAttempts < 1 {
		policy.MaxAttempts = 1
	}
	if policy.Budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, policy.Budget)
		defer cancel()
	}

	var lastErr *Error
	for attempt := 1; ; attempt++ {
		tok, err := c.tokenAttempt(ctx, creds, grant, form, attemptTimeout)
		if err == nil {
			c.logger().Debug("IRIS token request succeeded", "grant", grant, "attempt", attempt,
				"expires_in", int64(tok.Lifetime/time.Second), "refresh_token_issued", tok.RefreshToken != "")
			return tok, nil
		}
		err.Attempts = attempt
		lastErr = err
		c.logger().Debug("IRIS token request failed", "grant", grant, "attempt", attempt, "kind", err.Kind,
			"status", err.Status, "oauth_error", err.Code)
		if !err.Retryable() || attempt >= policy.MaxAttempts || ctx.Err() != nil {
			return nil, lastErr
		}
		if grant == GrantRefreshToken && err.MayHaveActed() {
			// IRIS may have rotated the refresh token and lost the answer;
			// sending it again would be a reuse, which an authorization
			// server may punish by revoking the whole grant. The caller
			// decides what to do with a token in this state.
			return nil, lastErr
		}
		wait := backoffDelay(policy, attempt)
		if err.RetryAfter > wait {
			wait = err.RetryAfter
		}
		// Deadlines are real time, whatever clock the client was given.
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			// Waiting would outlive the budget: answer now with the real
			// cause rather than a context error later.
			return nil, lastErr
		}
		if c.sleep(ctx, wait) != nil {
			return nil, lastErr
		}
	}
}

// backoffDelay is exponential with full jitter, so that many plugin
// instances hitting one IRIS outage do not retry in lockstep.
func backoffDelay(p RetryPolicy, attempt int) time.Duration {
	ceiling := float64(p.BaseDelay) * math.Pow(2, float64(attempt-1))
	if p.MaxDelay > 0 && ceiling > float64(p.MaxDelay) {
		ceiling = float64(p.MaxDelay)
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(ceiling/2 + rand.Float64()*ceiling/2)
}

func (c *Client) tokenAttempt(ctx context.Context, creds Credentials, grant Grant, form url.Values, attemptTimeout time.Duration) (*Token, *Error) {
	if attemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
	}
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				sent.Store(true)
			}
		},
	})
	obtainedAt := c.now()
	status, header, body, err := c.post(ctx, creds, creds.TokenURL, form)
	if err != nil {
		e := classifyTransportError(grant, err, ctx)
		e.Status = status
		e.Sent = sent.Load() || status != 0
		return nil, e
	}
	if status == http.StatusOK {
		tok, detail := parseTokenResponse(header.Get("Content-Type"), body)
		if detail != "" {
			return nil, &Error{Kind: KindBadResponse, Grant: grant, Status: status, Detail: detail, Sent: true}
		}
		tok.ObtainedAt = obtainedAt
		if tok.Scope == "" {
			tok.Scope = form.Get("scope")
		}
		return tok, nil
	}
	// A server that echoes its request (a misdirected token_url, a debugging
	// proxy) must not get our secrets into error text through the OAuth
	// fields, which are shown to callers.
	secrets := []string{creds.ClientSecret, creds.Password, form.Get("refresh_token"),
		base64.StdEncoding.EncodeToString([]byte(creds.ClientID + ":" + creds.ClientSecret)),
		url.QueryEscape(creds.ClientSecret), url.QueryEscape(creds.Password), url.QueryEscape(form.Get("refresh_token"))}
	e := classifyErrorResponse(grant, status, header, body, c.now(), secrets)
	e.Sent = true
	return nil, e
}

var oauthErrorCodes = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
}

func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// post sends one form POST with the client's Basic credentials. The Basic
// value is base64 of the raw "client_id:client_secret", exactly as the
// Trackunit documentation shows; RFC 6749's form-escaping of each part first
// would change any secret with characters outside [A-Za-z0-9-_.~].
func (c *Client) post(ctx context.Context, creds Credentials, endpoint string, form url.Values) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		// The URL was validated when the config was written; this is a
		// programming error, and its text names no secret.
		return 0, nil, nil, err
	}
	req.SetBasicAuth(creds.ClientID, creds.ClientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent())

	httpClient := c.HTTP
	if httpClient == nil {
		// Shared, so that a Client built without NewClient still reuses
		// connections instead of leaving a transport behind per request.
		httpClient = defaultHTTPClient()
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return 0, nil, nil, err
	}
	if len(body) > maxResponseBytes {
		return resp.StatusCode, resp.Header, nil, errResponseTooLarge
	}
	return resp.StatusCode, resp.Header, body, nil
}

var defaultHTTPClient = sync.OnceValue(NewHTTPClient)

var errResponseTooLarge = errors.New("response larger than the 128 KiB bound")

// userAgent names the plugin and its version to IRIS.
func userAgent() string { return "vault-plugin-secrets-iris/" + Version }

func classifyTransportError(grant Grant, err error, ctx context.Context) *Error {
	if errors.Is(err, errResponseTooLarge) {
		return &Error{Kind: KindBadResponse, Grant: grant, Detail: err.Error()}
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return &Error{Kind: KindTimeout, Grant: grant, Err: context.DeadlineExceeded}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return &Error{Kind: KindTimeout, Grant: grant, Err: err}
	}
	// url.Error's text is "Post "<token_url>": <cause>": the URL holds no
	// secret (config writes refuse userinfo), so it may be shown.
	return &Error{Kind: KindUnreachable, Grant: grant, Err: err}
}

func classifyErrorResponse(grant Grant, status int, header http.Header, body []byte, now time.Time, secrets []string) *Error {
	e := &Error{Grant: grant, Status: status}
	var oauthErr struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &oauthErr) == nil && oauthErr.Error != "" {
		// Redacted before truncation, which could cut a secret in two. The
		// RFC 6749 codes are kept as they are: callers match on them, and a
		// secret that happens to be part of one reveals nothing.
		e.Code = oauthErr.Error
		if !oauthErrorCodes[e.Code] {
			e.Code = sanitize(redact(e.Code, secrets), 64)
		}
		e.Description = sanitize(redact(oauthErr.ErrorDescription, secrets), maxDescriptionLen)
	}
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		e.Kind = KindUnavailable
		e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), now)
	case (status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden) && e.Code != "":
		e.Kind = KindRejected
	case status >= 300 && status < 400:
		e.Kind = KindBadResponse
		e.Detail = "redirected (check token_url; redirects are never followed)"
	default:
		e.Kind = KindBadResponse
		e.Detail = "not an OAuth error response (check token_url)"
	}
	return e
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}

// parseTokenResponse validates a 200 answer. It returns a non-empty detail
// saying what is wrong when the answer is unusable; the detail never quotes
// the body.
func parseTokenResponse(contentType string, body []byte) (*Token, string) {
	if contentType != "" {
		mediaType, _, err := mime.ParseMediaType(contentType)
		if err != nil || !(mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")) {
			return nil, "content type is not JSON"
		}
	}
	var raw struct {
		AccessToken  *string         `json:"access_token"`
		TokenType    *string         `json:"token_type"`
		RefreshToken *string         `json:"refresh_token"`
		Scope        *string         `json:"scope"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, "body is not a JSON token response"
	}
	if raw.AccessToken == nil || *raw.AccessToken == "" {
		return nil, "access_token is missing"
	}
	if raw.TokenType == nil || !strings.EqualFold(*raw.TokenType, "bearer") {
		return nil, "token_type is not Bearer"
	}
	lifetime, detail := parseExpiresIn(raw.ExpiresIn)
	if detail != "" {
		return nil, detail
	}
	tok := &Token{AccessToken: *raw.AccessToken, TokenType: "Bearer", Lifetime: lifetime}
	if raw.RefreshToken != nil {
		tok.RefreshToken = *raw.RefreshToken
	}
	if raw.Scope != nil {
		tok.Scope = *raw.Scope
	}
	return tok, ""
}

// parseExpiresIn accepts a JSON number or a numeric string (both are seen in
// the wild). A missing value means defaultLifetime; zero or negative means the
// token is already dead, which is an error; absurd values are capped.
func parseExpiresIn(raw json.RawMessage) (time.Duration, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return defaultLifetime, ""
	}
	text := string(raw)
	if strings.HasPrefix(text, `"`) {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, "expires_in is not a number"
		}
		text = strings.TrimSpace(s)
		// ParseFloat also takes "Inf", "NaN", hex and digit separators,
		// none of which is a number on the wire.
		if !jsonNumber.MatchString(text) {
			return 0, "expires_in is not a number"
		}
	}
	secs, err := strconv.ParseFloat(text, 64)
	// Out of float64's range is still a number: 1e400 is absurdly large
	// (capped below), 1e-400 is too small.
	if (err != nil && !errors.Is(err, strconv.ErrRange)) || math.IsNaN(secs) {
		return 0, "expires_in is not a number"
	}
	if secs <= 0 {
		return 0, "expires_in is not positive"
	}
	if secs < 1 {
		return 0, "expires_in is less than one second"
	}
	if secs > maxLifetime.Seconds() {
		return maxLifetime, ""
	}
	return time.Duration(math.Floor(secs)) * time.Second, ""
}

var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// sanitize keeps upstream text printable and short: error descriptions end up
// in Vault responses and logs.
func sanitize(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if runes := []rune(s); len(runes) > limit {
		s = string(runes[:limit]) + "…"
	}
	return strings.TrimSpace(s)
}

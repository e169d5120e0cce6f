package irisauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
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

const maxDescriptionLen = 200

// Error is every failure the client returns. Its text never contains a
// secret, a token or a raw response body: only the OAuth error code, a
// sanitised error_description, the HTTP status and the network cause.
type Error struct {
	Kind        ErrorKind
	Grant       GrantType
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
		if e.Code == "" {
			fmt.Fprintf(&b, "IRIS rejected the %s grant: HTTP %d without an OAuth error", e.Grant, e.Status)
			break
		}
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
// spent. Only a request that never left, an OAuth rejection, and a 429 (a
// rate limit turns a request away before it is processed) rule it out; a 503
// may come from a server that fell over half-way.
func (e *Error) MayHaveActed() bool {
	if !e.Sent {
		return false
	}
	switch e.Kind {
	case KindRejected:
		return false
	case KindUnavailable:
		return e.Status != http.StatusTooManyRequests
	}
	return true
}

// IsClientRefused reports whether err is a 401 or 403 that carried no OAuth
// error: no token endpoint answers a well-formed grant so unless it refused
// the client (or token_url is not a token endpoint), and it must be treated
// as the refusal it most likely is, not retried.
func IsClientRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == KindRejected && e.Code == "" &&
		(e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

// IsRejected reports whether err is an OAuth rejection with one of codes
// (any code when none are given); a 401 or 403 without an OAuth error
// (IsClientRefused) is a rejection with no code.
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

var errResponseTooLarge = fmt.Errorf("response larger than the %d KiB bound", maxResponseBytes>>10)

func classifyTransportError(grant GrantType, err error, ctx context.Context) *Error {
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
	// secret (the engine refuses URLs with userinfo), so it may be shown.
	return &Error{Kind: KindUnreachable, Grant: grant, Err: err}
}

var oauthErrorCodes = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
}

func classifyErrorResponse(grant GrantType, status int, header http.Header, body []byte, now time.Time, secrets []string) *Error {
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
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// No OAuth error, yet a refusal: a gateway in front of IRIS, or a
		// server that sends no body with it.
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

// redact replaces every echo of a secret in s, however it was encoded:
// each character of it may appear as itself, form- or percent-encoded (hex
// in either case, once or twice over, '+' for a space), or JSON-escaped
// (\uXXXX in either case, \/, \", \\ and the control escapes), in any
// mixture, since encoders differ in which characters they escape.
func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = echoPattern(secret).ReplaceAllLiteralString(s, "[redacted]")
		}
	}
	return s
}

var jsonShortEscapes = map[rune]string{'"': `\\"`, '\\': `\\\\`, '/': `\\/`, '\b': `\\b`, '\f': `\\f`, '\n': `\\n`, '\r': `\\r`, '\t': `\\t`}

// echoPattern matches secret in any of the encodings redact names.
func echoPattern(secret string) *regexp.Regexp {
	var b strings.Builder
	for _, r := range secret {
		b.WriteString("(?:")
		b.WriteString(regexp.QuoteMeta(string(r)))
		var buf [utf8.UTFMax]byte
		n := utf8.EncodeRune(buf[:], r)
		b.WriteString("|")
		for _, c := range buf[:n] {
			fmt.Fprintf(&b, "%%(?:25)?(?i:%02x)", c)
		}
		if r == ' ' {
			// '+', and '+' form-encoded once more.
			b.WriteString(`|\+|%(?i:2b)`)
		}
		if esc, ok := jsonShortEscapes[r]; ok {
			b.WriteString("|" + esc)
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			fmt.Fprintf(&b, `|\\u(?i:%04x)\\u(?i:%04x)`, r1, r2)
		} else {
			fmt.Fprintf(&b, `|\\u(?i:%04x)`, r)
		}
		b.WriteString(")")
	}
	return regexp.MustCompile(b.String())
}

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

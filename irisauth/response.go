package irisauth

import (
	"encoding/json"
	"errors"
	"math"
	"mime"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	// defaultLifetime is assumed when IRIS omits expires_in. IRIS documents
	// 3600 s, but a short guess is the safe one: a lease or cached token that
	// ends early costs one extra grant, one that ends late hands out a dead
	// token.
	defaultLifetime = 5 * time.Minute

	// maxLifetime caps absurd expires_in values for the same reason.
	maxLifetime = 24 * time.Hour
)

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

// ParseTokenResponse validates a 200 answer. It returns a non-empty detail
// saying what is wrong when the answer is unusable; the detail never quotes
// the body.
func ParseTokenResponse(contentType string, body []byte) (*Token, string) {
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

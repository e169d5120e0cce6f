package irisauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Upstreams echo requests in whatever encoding their framework uses; each
// of these is one, and an error must redact a secret in all of them.
var echoEncodings = map[string]func(string) string{
	"raw":                 func(s string) string { return s },
	"form, upper-case":    url.QueryEscape,
	"form, lower-case":    func(s string) string { return lowerHex(url.QueryEscape(s)) },
	"%20 for spaces":      url.PathEscape,
	"%20, lower-case":     func(s string) string { return lowerHex(strings.ReplaceAll(url.QueryEscape(s), "+", "%20")) },
	"form, twice":         func(s string) string { return url.QueryEscape(url.QueryEscape(s)) },
	"JSON, Go's escapes":  func(s string) string { return jsonInner(s) },
	"JSON, escaped slash": func(s string) string { return strings.ReplaceAll(jsonInner(s), "/", `\/`) },
	"JSON, \\u for all":   func(s string) string { return uEscapeAll(s, "%04x") },
	"JSON, \\U for all":   func(s string) string { return uEscapeAll(s, "%04X") },
}

func lowerHex(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			b.WriteString("%" + strings.ToLower(s[i+1:i+3]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func jsonInner(s string) string {
	j, _ := json.Marshal(s)
	return string(j[1 : len(j)-1])
}

// uEscapeAll escapes every character that is not a letter or digit as
// \uXXXX, surrogate pairs included.
func uEscapeAll(s, verb string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
			continue
		}
		for _, u := range utf16Of(r) {
			fmt.Fprintf(&b, `\u`+verb, u)
		}
	}
	return b.String()
}

func utf16Of(r rune) []rune {
	if r < 0x10000 {
		return []rune{r}
	}
	r -= 0x10000
	return []rune{0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff}
}

// Secrets with every character an encoder treats specially, echoed back in
// error_description in each encoding, never reach the error's text.
func TestClientRedactsEveryEncodingOfAnEchoedSecret(t *testing.T) {
	t.Parallel()
	creds := credentials{
		ClientID:     "0oa-redact",
		ClientSecret: `cs+q/ &"\=x`,
		Username:     "redact-user",
		Password:     `pw+é 😀/&"\<q`,
		Scopes:       []string{"api", "offline_access"},
	}
	const refreshToken = `rt+/ &"\x9`
	secrets := map[string]string{"client secret": creds.ClientSecret, "password": creds.Password, "refresh token": refreshToken}
	for encName, enc := range echoEncodings {
		for secretName, secret := range secrets {
			t.Run(encName+" "+secretName, func(t *testing.T) {
				echoed := enc(secret)
				body, err := json.Marshal(map[string]string{"error": "invalid_grant", "error_description": "got " + echoed + " back"})
				require.NoError(t, err)
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusBadRequest)
					_, _ = w.Write(body)
				}))
				t.Cleanup(srv.Close)
				c := creds
				c.TokenURL = srv.URL + "/token"
				h := newClientHarness()
				var grantErr error
				if secretName == "refresh token" {
					_, grantErr = h.RefreshGrant(context.Background(), c, refreshToken, time.Second)
				} else {
					_, grantErr = h.PasswordGrant(context.Background(), c, time.Second)
				}
				require.True(t, IsRejected(grantErr, "invalid_grant"), "%v", grantErr)
				text := grantErr.Error()
				require.Contains(t, text, "got [redacted] back")
				require.NotContains(t, text, secret)
				require.NotContains(t, text, echoed)
			})
		}
	}
}

package irisauth

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter bounds a Retry-After value before it is turned into a
// Duration, which would overflow for absurd values and wrap round to "retry
// now". Anything this long is beyond every budget anyway.
const maxRetryAfter = 24 * time.Hour

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

// mayRetry decides whether a failed attempt of grant is sent again.
func mayRetry(g Grant, err *Error) bool {
	if !err.Retryable() {
		return false
	}
	// IRIS may have rotated the refresh token and lost the answer; sending
	// it again would be a reuse, which an authorization server may punish
	// by revoking the whole grant.
	return g.RefreshToken() == "" || !err.MayHaveActed()
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

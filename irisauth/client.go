package irisauth

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Client sends grants to IRIS token endpoints. It holds no credentials: each
// Grant carries its own.
type Client struct {
	HTTP      *http.Client
	Retry     RetryPolicy
	Logger    hclog.Logger
	UserAgent string
	// Now and Sleep are the client's view of time, replaceable in tests.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Observe, when set, sees every failed attempt, retried or not: a
	// retried 429 never reaches the caller otherwise.
	Observe func(*Error)
}

// NewClient returns a client with the default HTTP client and retry policy.
func NewClient(logger hclog.Logger) *Client {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Client{HTTP: NewHTTPClient(), Retry: DefaultRetryPolicy, Logger: logger}
}

// RefreshOutcome says what became of the refresh token a grant sent, so that
// callers decide from a fact rather than from an error.
type RefreshOutcome int

const (
	// RefreshTokenUnused: the grant sent none, or IRIS provably did not act
	// on it (the request never left, or IRIS answered 429 or 503); it is
	// as good as before.
	RefreshTokenUnused RefreshOutcome = iota
	// RefreshTokenRotated: IRIS accepted it; it is spent, and the token's
	// RefreshToken (if any) replaces it.
	RefreshTokenRotated
	// RefreshTokenRefused: IRIS answered the grant with an OAuth error; the
	// refresh token is of no further use.
	RefreshTokenRefused
	// RefreshTokenOutcomeUnknown: the request may have reached IRIS and the
	// answer was lost, so IRIS may have spent it.
	RefreshTokenOutcomeUnknown
)

func (o RefreshOutcome) String() string {
	switch o {
	case RefreshTokenRotated:
		return "rotated"
	case RefreshTokenRefused:
		return "refused"
	case RefreshTokenOutcomeUnknown:
		return "outcome unknown"
	}
	return "unused"
}

// Result is what a grant did: the token it obtained, if any, and what became
// of the refresh token it sent.
type Result struct {
	Token          *Token
	RefreshOutcome RefreshOutcome
}

// Exchange sends the grant, retrying transient failures within the retry
// policy. A grant that sends a refresh token is retried only while IRIS
// cannot have acted on it.
func (c *Client) Exchange(ctx context.Context, g Grant) (Result, error) {
	tok, err := c.exchange(ctx, g)
	res := Result{Token: tok}
	if g.RefreshToken() != "" {
		res.RefreshOutcome = refreshOutcome(err)
	}
	if err != nil {
		// Not a typed nil inside a non-nil error interface.
		return res, err
	}
	return res, nil
}

func refreshOutcome(err *Error) RefreshOutcome {
	switch {
	case err == nil:
		return RefreshTokenRotated
	case err.Kind == KindRejected:
		return RefreshTokenRefused
	case err.MayHaveActed():
		return RefreshTokenOutcomeUnknown
	}
	return RefreshTokenUnused
}

func (c *Client) exchange(ctx context.Context, g Grant) (*Token, *Error) {
	policy := c.Retry
	if policy.MaxAttempts < 1 {
		policy.MaxAttempts = 1
	}
	if policy.Budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, policy.Budget)
		defer cancel()
	}
	for attempt := 1; ; attempt++ {
		tok, err := c.attempt(ctx, g)
		if err == nil {
			c.logger().Debug("IRIS token request succeeded", "grant", g.Type, "attempt", attempt,
				"expires_in", int64(tok.Lifetime/time.Second), "refresh_token_issued", tok.RefreshToken != "")
			return tok, nil
		}
		err.Attempts = attempt
		if c.Observe != nil {
			c.Observe(err)
		}
		c.logger().Debug("IRIS token request failed", "grant", g.Type, "attempt", attempt, "kind", err.Kind,
			"status", err.Status, "oauth_error", err.Code)
		if attempt >= policy.MaxAttempts || ctx.Err() != nil || !mayRetry(g, err) {
			return nil, err
		}
		wait := max(backoffDelay(policy, attempt), err.RetryAfter)
		// Deadlines are real time, whatever clock the client was given.
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			// Waiting would outlive the budget: answer now with the real
			// cause rather than a context error later.
			return nil, err
		}
		if c.sleep(ctx, wait) != nil {
			return nil, err
		}
	}
}

// Revoke asks an RFC 7009 revocation endpoint to revoke token, authenticated
// as the endpoint's client. It makes a single attempt within timeout:
// callers use it on a best-effort basis.
func (c *Client) Revoke(ctx context.Context, e Endpoint, revocationURL, token, tokenTypeHint string, timeout time.Duration) error {
	form := url.Values{"token": {token}}
	if tokenTypeHint != "" {
		form.Set("token_type_hint", tokenTypeHint)
	}
	e.addBodyCredentials(form)
	attemptCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	status, _, _, err := c.post(attemptCtx, e, revocationURL, form)
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

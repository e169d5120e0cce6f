package irisauth

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxResponseBytes bounds what we read of any IRIS answer. Token responses
// are a few KiB even with JWT access tokens; anything larger is not a token
// response and must not be buffered.
const maxResponseBytes = 128 << 10

// NewHTTPClient returns the HTTP client for IRIS: it never follows redirects
// (a redirect would carry the client credentials to another URL), and bounds
// connection set-up; per-request timeouts come from the caller's context.
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

// Shared, so that a Client built without NewClient still reuses connections
// instead of leaving a transport behind per request.
var defaultHTTPClient = sync.OnceValue(NewHTTPClient)

// attempt sends the grant once.
func (c *Client) attempt(ctx context.Context, g Grant) (*Token, *Error) {
	if g.Endpoint.AttemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.Endpoint.AttemptTimeout)
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
	status, header, body, err := c.post(ctx, g.Endpoint, g.Endpoint.TokenURL, g.form())
	if err != nil {
		e := classifyTransportError(g.Type, err, ctx)
		e.Status = status
		e.Sent = sent.Load() || status != 0
		return nil, e
	}
	if status == http.StatusOK {
		tok, detail := ParseTokenResponse(header.Get("Content-Type"), body)
		if detail != "" {
			return nil, &Error{Kind: KindBadResponse, Grant: g.Type, Status: status, Detail: detail, Sent: true}
		}
		tok.ObtainedAt = obtainedAt
		if tok.Scope == "" {
			tok.Scope = g.Params.Get("scope")
		}
		return tok, nil
	}
	e := classifyErrorResponse(g.Type, status, header, body, c.now(), g.secrets())
	e.Sent = true
	return nil, e
}

// post sends one form POST authenticated as the endpoint's client.
func (c *Client) post(ctx context.Context, e Endpoint, target string, form url.Values) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		// The URL was validated when it was configured; this is a
		// programming error, and its text names no secret.
		return 0, nil, nil, err
	}
	if e.Auth == AuthBasic {
		req.Header.Set("Authorization", e.basicValue())
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}

	httpClient := c.HTTP
	if httpClient == nil {
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

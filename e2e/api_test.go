//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/require"
)

// The HTTP API

// recordingTransport copies every response body into the recorder.
type recordingTransport struct {
	base http.RoundTripper
	rec  *recorder
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	rt.rec.addOutput("api: "+req.Method+" "+req.URL.Path, string(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// apiResult is one raw API exchange: the status and the decoded JSON body.
type apiResult struct {
	Status int
	Body   map[string]any
	Raw    string
}

// errorsText joins Vault's "errors" array, for assertions on messages.
func (r apiResult) errorsText() string {
	errs, _ := r.Body["errors"].([]any)
	var parts []string
	for _, e := range errs {
		parts = append(parts, fmt.Sprint(e))
	}
	return strings.Join(parts, "\n")
}

// raw sends one request to /v1/<path> and returns whatever came back,
// without the API client's interpretation of 404s and errors.
func (v *vaultServer) raw(t testing.TB, method, path string, body any) apiResult {
	t.Helper()
	return rawWith(t, v.api(), method, path, body)
}

func rawWith(t testing.TB, client *api.Client, method, path string, body any) apiResult {
	t.Helper()
	req := client.NewRequest(method, "/v1/"+path)
	if body != nil {
		require.NoError(t, req.SetJSONBody(body))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	//lint:ignore SA1019 the raw request is the point: status codes and bodies as Vault sent them
	resp, err := client.RawRequestWithContext(ctx, req)
	if resp == nil {
		require.NoError(t, err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	require.NoError(t, rerr)
	res := apiResult{Status: resp.StatusCode, Raw: string(b)}
	if len(bytes.TrimSpace(b)) > 0 {
		_ = json.Unmarshal(b, &res.Body)
	}
	return res
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

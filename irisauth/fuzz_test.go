package irisauth

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// parseDetails is every detail parseTokenResponse may give. A fixed set is
// the simplest proof that no detail quotes the body.
var parseDetails = map[string]bool{
	"content type is not JSON":           true,
	"body is not a JSON token response":  true,
	"access_token is missing":            true,
	"token_type is not Bearer":           true,
	"expires_in is not a number":         true,
	"expires_in is not positive":         true,
	"expires_in is less than one second": true,
}

func FuzzParseTokenResponse(f *testing.F) {
	for _, seed := range []struct{ contentType, body string }{
		{"application/json", `{"token_type":"Bearer","expires_in":3600,"access_token":"at_x","scope":"api","refresh_token":"rt_y"}`},
		{"application/json;charset=UTF-8", `{"token_type":"bearer","expires_in":"3600","access_token":"at_x"}`},
		{"", `{"token_type":"Bearer","access_token":"at_x"}`},
		{"application/vnd.api+json", `{"token_type":"BEARER","access_token":"a","expires_in":1}`},
		{"text/html", `<html><body>{"access_token":"at_x"}</body></html>`},
		{"application/json; charset", `{}`},
		{"application/json", `{"access_token":"","token_type":"Bearer"}`},
		{"application/json", `{"access_token":"at_x","token_type":"MAC","expires_in":3600}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":0}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":-1}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":0.999}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":1e400}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":"1e-400"}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":"Infinity"}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":"0x1p4"}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":99999999999999999999}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","expires_in":[1]}`},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer","extra":{"deep":[null,true,1.5]}}`},
		{"application/json", `{"ACCESS_TOKEN":"at_x","Token_Type":"Bearer"}`},
		{"application/json", `{"access_token":"at_x","access_token":"","token_type":"Bearer"}`},
		{"application/json", `null`},
		{"application/json", `[]`},
		{"application/json", ``},
		{"application/json", "{\"access_token\":\"\xff\xfe\",\"token_type\":\"Bearer\"}"},
		{"application/json", `{"access_token":"at_x","token_type":"Bearer"} {"x":1}`},
	} {
		f.Add(seed.contentType, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		tok, detail := ParseTokenResponse(contentType, body)
		if detail != "" {
			if tok != nil {
				t.Fatalf("both a token and a detail (%q)", detail)
			}
			if !parseDetails[detail] {
				t.Fatalf("detail %q is not one of the defined ones", detail)
			}
			if len(body) > 20 && strings.Contains(detail, string(body)) {
				t.Fatalf("detail %q quotes the body", detail)
			}
			return
		}
		if tok == nil {
			t.Fatal("neither a token nor a detail")
		}
		if tok.AccessToken == "" {
			t.Fatal("success without an access token")
		}
		if tok.TokenType != "Bearer" {
			t.Fatalf("token type %q", tok.TokenType)
		}
		if tok.Lifetime < time.Second || tok.Lifetime > maxLifetime || tok.Lifetime%time.Second != 0 {
			t.Fatalf("lifetime %v is not whole seconds within [1s, %v]", tok.Lifetime, maxLifetime)
		}
		// Success means the body really is one JSON object.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("accepted a body that is not a JSON object: %v", err)
		}
	})
}

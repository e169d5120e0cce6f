package iristest

import (
	"net/http"
	"strings"
)

// RFC 7009 revocation and RFC 7662 style introspection, which IRIS does not
// document but tests use to observe what a client did.

// tokenEndpointRequest checks what /revoke and /introspect share: POST, the
// form rules, Basic client authentication (for every kind of client, API
// keys and app installations included), and a token parameter. It answers
// the request itself when they are wrong.
func (s *Server) tokenEndpointRequest(w http.ResponseWriter, r *http.Request) (token, clientID string, ok bool) {
	if r.Method != http.MethodPost {
		s.methodNotAllowed(w)
		return "", "", false
	}
	body, bodyErr := readBody(w, r)
	form, e := parseForm(r, body, bodyErr)
	if e == nil {
		clientID, e = s.authenticateBasic(r, form, s.anyClientSecret)
	}
	if e == nil && form.Get("token") == "" {
		e = invalidRequest("The token parameter is required.")
	}
	if e != nil {
		s.fail(w, e)
		return "", "", false
	}
	return form.Get("token"), clientID, true
}

func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	token, clientID, ok := s.tokenEndpointRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	// The hint is only an optimisation in RFC 7009, so both kinds are looked
	// up whatever it says. Tokens of other clients are left alone silently,
	// like unknown ones.
	if t := s.access[token]; t != nil && t.g.clientID == clientID {
		t.revoked = true
	} else if t := s.refresh[token]; t != nil && t.g.clientID == clientID {
		t.revoked = true
		t.g.revoked = true
	}
	s.stats.Revocations++
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	token, clientID, ok := s.tokenEndpointRequest(w, r)
	if !ok {
		return
	}
	var res introspectionResponse
	s.mu.Lock()
	if t := s.access[token]; t != nil && t.g.clientID == clientID && s.activeLocked(t) {
		res = introspectionResponse{
			Active:    true,
			Scope:     strings.Join(t.scope, " "),
			ClientID:  t.g.clientID,
			Username:  t.g.username,
			AccountID: t.g.accountID,
			TokenType: "Bearer",
			Exp:       t.expires.Unix(),
			Iat:       t.issued.Unix(),
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
}

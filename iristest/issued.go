package iristest

import "time"

// Issuance is one successful token answer: the tokens a single grant issued
// together. The emulator keeps one for every grant it makes, so that tests
// can attribute any token they come across without wrapping the handler.
type Issuance struct {
	// Endpoint is the path that issued the tokens: "/token", "/token/v2"
	// or "/apptoken".
	Endpoint string
	// GrantType is "password", "refresh_token" or "client_credentials".
	GrantType string
	ClientID  string
	Username  string // API users only (/token)
	AccountID string // app installations only (/apptoken)
	Scope     string // as reported in the answer
	// RefreshToken is empty when the answer carried none.
	AccessToken, RefreshToken string
	// IssuedAt and ExpiresAt are by the emulator's clock (see SetClock).
	IssuedAt, ExpiresAt time.Time
	// Answered reports whether the answer carrying the tokens was sent.
	// It is false while the request is being handled and for good when a
	// fault replaced or dropped the answer, so the client never saw them.
	Answered bool
}

func (s *Server) recordIssuanceLocked(is Issuance) {
	s.issuedIndex[is.AccessToken] = len(s.issued)
	if is.RefreshToken != "" {
		s.issuedIndex[is.RefreshToken] = len(s.issued)
	}
	s.issued = append(s.issued, is)
}

// markAnswered notes that the answer res, which may be nil for a refusal,
// reached the wire.
func (s *Server) markAnswered(res *tokenResponse) {
	if res == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.issuedIndex[res.AccessToken]; ok {
		s.issued[i].Answered = true
	}
}

// Issued returns every token answer the emulator produced, oldest first,
// whatever became of the tokens since (refreshed, revoked, expired).
// ResetStats does not clear it.
func (s *Server) Issued() []Issuance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Issuance(nil), s.issued...)
}

// IssuanceOf returns the answer that carried token, an access or a refresh
// token, and false if the emulator never issued it.
func (s *Server) IssuanceOf(token string) (Issuance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.issuedIndex[token]
	if !ok {
		return Issuance{}, false
	}
	return s.issued[i], true
}

// OwnerOf returns the client ID that an access or refresh token was issued
// to, and false if the emulator never issued it.
func (s *Server) OwnerOf(token string) (clientID string, ok bool) {
	is, ok := s.IssuanceOf(token)
	return is.ClientID, ok
}

// IsAccessToken reports whether the emulator ever issued token as an access
// token.
func (s *Server) IsAccessToken(token string) bool {
	is, ok := s.IssuanceOf(token)
	return ok && is.AccessToken == token
}

// IsRefreshToken reports whether the emulator ever issued token as a refresh
// token.
func (s *Server) IsRefreshToken(token string) bool {
	is, ok := s.IssuanceOf(token)
	return ok && is.RefreshToken == token
}

package iristest

import "fmt"

// The API users an emulator serves, and what their admin does to them in
// Trackunit Manager: add, remove, change a password or a client secret,
// end every session.

// AddUser adds u, replacing any user with the same username. The user's client
// secret becomes the secret of its client ID. It panics if the client ID
// belongs to an API key or app installation.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addUserLocked(u)
}

func (s *Server) addUserLocked(u User) {
	if _, taken := s.ccClients[u.ClientID]; taken {
		panic(fmt.Sprintf("iristest: client ID %q already belongs to an API key or app installation", u.ClientID))
	}
	s.users[u.Username] = u
	s.rebuildClientsLocked()
}

func (s *Server) rebuildClientsLocked() {
	clear(s.userClients)
	for _, u := range s.users {
		s.userClients[u.ClientID] = u.ClientSecret
	}
}

// RemoveUser deletes a user, as when an admin deletes the API user. Every
// token of the user is revoked, so a client cannot carry on with refresh
// tokens issued before, and its lockout state is forgotten. The user's
// client disappears with its last user.
func (s *Server) RemoveUser(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.users, username)
	s.rebuildClientsLocked()
	s.revokeUserLocked(username)
	s.lockout.forget(username)
}

// SetPassword changes a user's password, as a password change in Trackunit
// Manager does. Tokens already issued stay valid (call RevokeAll as well to
// model a change that ends the user's sessions). It panics for an unknown
// user.
func (s *Server) SetPassword(username, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if !ok {
		panic(fmt.Sprintf("iristest: SetPassword: no user %q", username))
	}
	u.Password = password
	s.users[username] = u
}

// SetClientSecret changes the secret of a client: an API user's client (for
// every user sharing it), an API key or an app installation, as a secret
// rotation would. Tokens already issued stay valid. It panics for an unknown
// client ID.
func (s *Server) SetClientSecret(clientID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.ccClients[clientID]; c != nil {
		c.secret = secret
		return
	}
	if _, ok := s.userClients[clientID]; !ok {
		panic(fmt.Sprintf("iristest: SetClientSecret: no client %q", clientID))
	}
	for name, u := range s.users {
		if u.ClientID == clientID {
			u.ClientSecret = secret
			s.users[name] = u
		}
	}
	s.rebuildClientsLocked()
}

// RevokeAll revokes every access and refresh token of a user, as when an admin
// ends all of its sessions.
func (s *Server) RevokeAll(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeUserLocked(username)
}

func (s *Server) revokeUserLocked(username string) {
	s.revokeGrantsLocked(func(g *grant) bool { return g.endpoint == tokenPath && g.username == username })
}

func (s *Server) revokeGrantsLocked(match func(*grant) bool) {
	for _, t := range s.refresh {
		if match(t.g) {
			t.g.revoked = true
		}
	}
	for _, t := range s.access {
		if match(t.g) {
			t.g.revoked = true
		}
	}
}

// LiveRefreshTokens returns how many refresh tokens of a user could still be
// used: issued, not yet used and not revoked.
func (s *Server) LiveRefreshTokens(username string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.refresh {
		if t.g.username == username && !t.used && !t.revoked && !t.g.revoked {
			n++
		}
	}
	return n
}

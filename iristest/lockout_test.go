package iristest

import (
	"strings"
	"testing"
)

func wrongPassword(u User) string {
	return form("grant_type", "password", "username", u.Username, "password", "wrong", "scope", "api")
}

func TestRefusedAttemptsWithoutLockout(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	for range 10 {
		wantOAuthError(t, post(t, s.TokenURL, basicOf(mainUser), wrongPassword(mainUser)), 400, "invalid_grant")
	}
	// The default never locks.
	wantToken(t, login(t, s, mainUser, "api"), "api", false)
	// Refusals before the password check do not count against the user.
	post(t, s.TokenURL, basic(mainUser.ClientID, "wrong"), passwordForm(mainUser, "api"))
	post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api nonsense"))
	// Another client's user and an unknown user count for their names.
	post(t, s.TokenURL, basicOf(mainUser), passwordForm(otherUser, "api"))
	post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "password", "username", "nobody", "password", "x"))

	for name, want := range map[string]int{mainUser.Username: 10, otherUser.Username: 1, "nobody": 1, legacyUser.Username: 0} {
		if got := s.RefusedAttempts(name); got != want {
			t.Errorf("RefusedAttempts(%q) = %d, want %d", name, got, want)
		}
	}
	s.ResetStats()
	if got := s.RefusedAttempts(mainUser.Username); got != 0 {
		t.Errorf("RefusedAttempts after ResetStats = %d", got)
	}
}

func TestLockout(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.SetLockoutThreshold(3)

	// A success resets the consecutive count.
	for range 2 {
		post(t, s.TokenURL, basicOf(mainUser), wrongPassword(mainUser))
	}
	login(t, s, mainUser, "api")
	for range 2 {
		post(t, s.TokenURL, basicOf(mainUser), wrongPassword(mainUser))
	}
	if s.Locked(mainUser.Username) {
		t.Fatal("locked after 2 consecutive refusals")
	}
	_, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)

	for range 3 {
		wantOAuthError(t, post(t, s.TokenURL, basicOf(mainUser), wrongPassword(mainUser)), 400, "invalid_grant")
	}
	if !s.Locked(mainUser.Username) {
		t.Fatal("not locked after 3 consecutive refusals")
	}
	res := post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api"))
	wantOAuthError(t, res, 400, "invalid_grant")
	if !strings.Contains(res.str("error_description"), "locked") {
		t.Errorf("description %q does not say the account is locked", res.str("error_description"))
	}
	if got := s.RefusedAttempts(mainUser.Username); got != 8 {
		t.Errorf("RefusedAttempts = %d, want 8", got)
	}
	// Refresh tokens and other users are unaffected.
	wantToken(t, refresh(t, s, mainUser, rt), "api offline_access", true)
	login(t, s, otherUser, "api")

	// ResetStats keeps the lock: it belongs to the account.
	s.ResetStats()
	wantOAuthError(t, post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")), 400, "invalid_grant")

	s.Unlock(mainUser.Username)
	if s.Locked(mainUser.Username) {
		t.Error("still locked after Unlock")
	}
	wantToken(t, login(t, s, mainUser, "api"), "api", false)
	// Unlock restarted the count as well.
	for range 2 {
		post(t, s.TokenURL, basicOf(mainUser), wrongPassword(mainUser))
	}
	login(t, s, mainUser, "api")

	// An unknown name is never locked, so a user added under it later can
	// sign in.
	newcomer := User{ClientID: mainUser.ClientID, ClientSecret: mainUser.ClientSecret, Username: "newcomer", Password: "pw"}
	for range 5 {
		post(t, s.TokenURL, basicOf(mainUser), passwordForm(newcomer, "api"))
	}
	s.AddUser(newcomer)
	login(t, s, newcomer, "api")

	// RemoveUser forgets the lock of the user it removes.
	for range 3 {
		post(t, s.TokenURL, basicOf(otherUser), wrongPassword(otherUser))
	}
	s.RemoveUser(otherUser.Username)
	s.AddUser(otherUser)
	login(t, s, otherUser, "api")

	// Zero turns locking off again.
	s.SetLockoutThreshold(0)
	for range 5 {
		post(t, s.TokenURL, basicOf(mainUser), wrongPassword(mainUser))
	}
	login(t, s, mainUser, "api")
}

func TestSetPassword(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	at, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	s.SetPassword(mainUser.Username, "new password")
	wantOAuthError(t, post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")), 400, "invalid_grant")
	changed := mainUser
	changed.Password = "new password"
	login(t, s, changed, "api")
	// Issued tokens survive a password change.
	if active, _ := s.Introspect(at); !active {
		t.Error("access token revoked by a password change")
	}
	wantToken(t, refresh(t, s, mainUser, rt), "api offline_access", true)

	defer func() {
		if recover() == nil {
			t.Error("SetPassword of an unknown user did not panic")
		}
	}()
	s.SetPassword("nobody", "x")
}

func TestSetClientSecret(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddUser(User{ClientID: mainUser.ClientID, ClientSecret: mainUser.ClientSecret, Username: "second", Password: "pw2"})
	_, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	s.SetClientSecret(mainUser.ClientID, "rotated")

	wantOAuthError(t, post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")), 401, "invalid_client")
	rotated := mainUser
	rotated.ClientSecret = "rotated"
	login(t, s, rotated, "api")
	// Every user of the client moved to the new secret.
	login(t, s, User{ClientID: mainUser.ClientID, ClientSecret: "rotated", Username: "second", Password: "pw2"}, "api")
	// The refresh token outlives the rotation, with the new secret.
	wantToken(t, refresh(t, s, rotated, rt), "api offline_access", true)
	// Other clients are untouched.
	login(t, s, otherUser, "api")

	defer func() {
		if recover() == nil {
			t.Error("SetClientSecret of an unknown client did not panic")
		}
	}()
	s.SetClientSecret("0oanobody", "x")
}

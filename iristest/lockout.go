package iristest

import "net/http"

// errLocked is not Okta's wording, which is unknown: it says what happened
// so that a test failing on it is easy to read.
var errLocked = &oauthError{http.StatusBadRequest, "invalid_grant", "The account is locked after too many failed sign-in attempts."}

// lockout models Okta's password policy lockout for API users: after a
// number of consecutive refused password grants the user is locked until an
// admin unlocks it.
type lockout struct {
	threshold   int            // 0: never lock
	refused     map[string]int // by username, every refused password grant; a statistic
	consecutive map[string]int // by username, refusals since the last success
	locked      map[string]bool
}

func newLockout() lockout {
	return lockout{refused: map[string]int{}, consecutive: map[string]int{}, locked: map[string]bool{}}
}

// refuse counts a refused password grant naming username. Only existing users
// can be locked: a name nobody has yet must not be locked when it is added.
func (l *lockout) refuse(username string, exists bool) {
	l.refused[username]++
	if !exists {
		return
	}
	l.consecutive[username]++
	if l.threshold > 0 && l.consecutive[username] >= l.threshold {
		l.locked[username] = true
	}
}

func (l *lockout) succeed(username string) { delete(l.consecutive, username) }

func (l *lockout) forget(username string) {
	delete(l.consecutive, username)
	delete(l.locked, username)
}

// SetLockoutThreshold makes n consecutive refused password grants lock the
// user they named; n <= 0 (the default) never locks. A locked user's password
// grants are refused with invalid_grant, even with the right password, until
// Unlock; its refresh tokens keep working, since how IRIS treats them is
// unknown. A successful password grant resets the consecutive count. The
// threshold applies from the next refusal on: lowering it does not lock
// users whose count already exceeds it.
func (s *Server) SetLockoutThreshold(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockout.threshold = max(n, 0)
}

// Unlock unlocks a user and resets its consecutive refusals, as an admin
// would.
func (s *Server) Unlock(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockout.forget(username)
}

// Locked reports whether a user is locked out.
func (s *Server) Locked(username string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lockout.locked[username]
}

// RefusedAttempts returns how many password grants naming username were
// refused with invalid_grant (wrong password, unknown user, another client's
// user, or a locked account) since the start or ResetStats. Requests refused
// earlier, for client authentication or a malformed form, do not count: they
// never reach the user's password check.
func (s *Server) RefusedAttempts(username string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lockout.refused[username]
}

package iris

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns what the engine remembers, in memory, of each API user's
// grants: the hold on credentials IRIS refused, the pause on a revocation
// endpoint that does not answer, and the counters status/ shows. None of it
// is stored: a restart forgets it, which costs at most one more attempt.

const (
	// A hold on refused credentials starts here and doubles up to the
	// maximum: an Okta-style lockout policy locks an account after a few
	// failures, and Agent re-reads every 15 s.
	minCredentialHold = 30 * time.Second
	maxCredentialHold = 15 * time.Minute

	// revocationPause is how long remote revocation is skipped for an API
	// user after its revocation endpoint did not answer, so that revoking
	// many leases (an unmount) does not pay the timeout once per lease.
	revocationPause = 5 * time.Minute

	grantWindow = time.Hour
)

// grantHealth is the runtime record of one API user.
type grantHealth struct {
	generation string

	lastSuccess         time.Time
	lastSuccessGrant    irisauth.GrantType
	lastFailure         time.Time
	lastFailureReason   string
	consecutiveFailures int
	recentGrants        []time.Time // grants sent within grantWindow, oldest first

	// A hold: until heldUntil no grant is sent; after it, one attempt at a
	// time (attempting) decides whether the hold ends or doubles.
	heldUntil  time.Time
	holdLength time.Duration
	refusal    error
	attempting bool

	revocationPausedUntil time.Time
}

// grantBook keeps the grantHealth of every API user of a mount that had a
// grant since the process started; deleting a config forgets it.
type grantBook struct {
	mu     sync.Mutex
	byName map[string]*grantHealth
	now    func() time.Time
}

func newGrantBook(now func() time.Time) *grantBook {
	return &grantBook{byName: make(map[string]*grantHealth), now: now}
}

// entryLocked returns the record for the config generation, starting a new
// one when the config changed since.
func (gb *grantBook) entryLocked(name, generation string) *grantHealth {
	h := gb.byName[name]
	if h == nil || h.generation != generation {
		h = &grantHealth{generation: generation}
		gb.byName[name] = h
	}
	return h
}

// heldError answers a grant that a hold kept from being sent. It wraps the
// refusal that started the hold, so that callers map it and hint at it as
// they would the refusal itself.
type heldError struct {
	refusal error
	until   time.Time
	now     time.Time
}

func (e *heldError) Error() string {
	return fmt.Sprintf("%s; no new attempt until %s (in %s), so that the API user is not locked out; any write to its config ends the wait",
		e.refusal, e.until.UTC().Format(time.RFC3339), e.until.Sub(e.now).Round(time.Second))
}

func (e *heldError) Unwrap() error { return e.refusal }

// admit decides whether a grant may be sent now. It returns a heldError
// while the API user's credentials are held back; once a hold has run out,
// it admits one grant at a time until one answers.
func (gb *grantBook) admit(name, generation string) error {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	h := gb.entryLocked(name, generation)
	if h.refusal == nil {
		return nil
	}
	now := gb.now()
	if now.Before(h.heldUntil) || h.attempting {
		return &heldError{refusal: h.refusal, until: h.heldUntil, now: now}
	}
	h.attempting = true
	return nil
}

// record notes the outcome of a grant admit let through.
func (gb *grantBook) record(name, generation string, grant irisauth.GrantType, err error) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	now := gb.now()
	h := gb.entryLocked(name, generation)
	h.attempting = false
	h.recentGrants = append(pruneBefore(h.recentGrants, now.Add(-grantWindow)), now)
	if err == nil {
		h.lastSuccess, h.lastSuccessGrant = now, grant
		h.consecutiveFailures = 0
		h.refusal, h.heldUntil, h.holdLength = nil, time.Time{}, 0
		return
	}
	h.lastFailure, h.lastFailureReason = now, err.Error()
	h.consecutiveFailures++
	if refusesCredentials(grant, err) {
		h.holdLength = min(max(2*h.holdLength, minCredentialHold), maxCredentialHold)
		h.heldUntil = now.Add(h.holdLength)
		h.refusal = err
	}
}

// refusesCredentials tells a refusal of the API user's own credentials,
// which will not pass until an operator changes them, from a refused refresh
// token, which the password grant replaces.
func refusesCredentials(grant irisauth.GrantType, err error) bool {
	if irisauth.IsRejected(err, "invalid_client") {
		return true
	}
	return grant != irisauth.GrantRefreshToken && irisauth.IsRejected(err, "invalid_grant")
}

func pruneBefore(times []time.Time, cutoff time.Time) []time.Time {
	i := 0
	for i < len(times) && times[i].Before(cutoff) {
		i++
	}
	return append(times[:0], times[i:]...)
}

// endHold lets the next grant through: a config write may have fixed what
// IRIS refused.
func (gb *grantBook) endHold(name string) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	if h := gb.byName[name]; h != nil {
		h.refusal, h.heldUntil, h.holdLength, h.attempting = nil, time.Time{}, 0, false
	}
}

// forget drops an API user's whole record, when its config is deleted.
func (gb *grantBook) forget(name string) {
	gb.mu.Lock()
	delete(gb.byName, name)
	gb.mu.Unlock()
}

// revocationPaused reports whether remote revocation is being skipped.
func (gb *grantBook) revocationPaused(name string) bool {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	h := gb.byName[name]
	return h != nil && gb.now().Before(h.revocationPausedUntil)
}

// revocationFailed pauses remote revocation after an endpoint that did not
// answer; a refusal or a bad answer came quickly and pauses nothing.
func (gb *grantBook) revocationFailed(name, generation string, err error) {
	var e *irisauth.Error
	if !errors.As(err, &e) || (e.Kind != irisauth.KindTimeout && e.Kind != irisauth.KindUnreachable) {
		return
	}
	gb.mu.Lock()
	defer gb.mu.Unlock()
	gb.entryLocked(name, generation).revocationPausedUntil = gb.now().Add(revocationPause)
}

// grantReport is what status/ shows of the runtime record.
type grantReport struct {
	LastSuccess         time.Time
	LastSuccessGrant    irisauth.GrantType
	LastFailure         time.Time
	LastFailureReason   string
	ConsecutiveFailures int
	HeldUntil           time.Time
	GrantsLastHour      int
}

func (gb *grantBook) report(name, generation string) grantReport {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	h := gb.byName[name]
	if h == nil || h.generation != generation {
		return grantReport{}
	}
	now := gb.now()
	r := grantReport{
		LastSuccess:         h.lastSuccess,
		LastSuccessGrant:    h.lastSuccessGrant,
		LastFailure:         h.lastFailure,
		LastFailureReason:   h.lastFailureReason,
		ConsecutiveFailures: h.consecutiveFailures,
		GrantsLastHour:      len(pruneBefore(h.recentGrants, now.Add(-grantWindow))),
	}
	if h.refusal != nil {
		r.HeldUntil = h.heldUntil
	}
	return r
}

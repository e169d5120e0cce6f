package iris

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns what the engine remembers, in memory, of grants: the hold
// on credentials IRIS refused and the gate that lets one attempt at a time
// through while credentials are unproven, both kept per upstream identity;
// and, per config name, the pause on a revocation endpoint that does not
// answer and the counters status/ shows. None of it is stored: a restart
// forgets it, and starts every identity unproven.
//
// An upstream identity is what a lockout policy counts refusals against:
// the token endpoint's host, the client ID and, for API users, the
// username. Several config names may share one: a hold started by one of
// them holds all of them back, since IRIS locks the user, not the name.

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

	// maxRefusedWrites is how many config writes in a row may each be
	// refused (their verifying grant, or the first grant after them) and
	// still end a hold. Past it, writes end no hold and verifying grants are
	// held like any other: whoever may only update a config (a rotator with
	// made-up secrets) must not get one password guess at IRIS per write.
	maxRefusedWrites = 3
)

// nameHealth is the runtime record of one config name, for the config
// generation it was last written with; status/ shows its counters.
type nameHealth struct {
	// generation is empty after a write elsewhere: which config is
	// current is not known here, and every caller counts as current.
	generation string
	identity   string

	lastSuccess         time.Time
	lastSuccessGrant    irisauth.GrantType
	lastFailure         time.Time
	lastFailureReason   string
	consecutiveFailures int
	recentGrants        []time.Time // grants sent within grantWindow, oldest first

	revocationPausedUntil time.Time
}

// upstreamHealth is the runtime record of one upstream identity.
type upstreamHealth struct {
	// epoch changes with every config write that touches the identity:
	// the outcome of a grant admitted before it says nothing about what
	// was written, and neither ends nor starts a hold.
	epoch uint64
	// proven holds the config generations whose log-in grant succeeded in
	// this epoch. A generation not in it is unproven: its log-in grants go
	// one at a time.
	proven map[string]bool

	// A hold: until heldUntil no grant is sent; after it, one attempt at a
	// time decides whether the hold ends or doubles.
	heldUntil  time.Time
	holdLength time.Duration
	refusal    error

	// attempt is open while the identity's one attempt is in flight;
	// closing it wakes the grants waiting for its outcome.
	attempt chan struct{}

	// refusedWrites counts the config writes in a row that IRIS refused;
	// a success sets it back to zero. writeUnsettled is set by a write
	// whose credentials no grant has tried yet.
	refusedWrites  int
	writeUnsettled bool

	names map[string]bool
}

// grantBook keeps the records of every config name and upstream identity
// of a mount that had a grant since the process started; deleting a config
// forgets its name.
type grantBook struct {
	mu         sync.Mutex
	byName     map[string]*nameHealth
	byIdentity map[string]*upstreamHealth
	now        func() time.Time
}

func newGrantBook(now func() time.Time) *grantBook {
	return &grantBook{byName: make(map[string]*nameHealth), byIdentity: make(map[string]*upstreamHealth), now: now}
}

// upstreamIdentity is the identity the config's grants are counted
// against: a client-credentials kind has no user, so its client is all.
func upstreamIdentity(cfg *credential) string {
	user := ""
	if cfg.kind().actsAsUser {
		user = cfg.Username
	}
	return strings.Join([]string{tokenHost(cfg.TokenURL), cfg.ClientID, user}, "\x00")
}

// tokenHost is host:port, with the scheme's default port spelled out, so
// that two spellings of one endpoint share a hold.
func tokenHost(tokenURL string) string {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Hostname() == "" {
		return tokenURL
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func (gb *grantBook) upstreamLocked(key string) *upstreamHealth {
	u := gb.byIdentity[key]
	if u == nil {
		u = &upstreamHealth{proven: map[string]bool{}, names: map[string]bool{}}
		gb.byIdentity[key] = u
	}
	return u
}

// nameLocked returns the name's record, starting one for cfg when the
// book has none (since the start or a delete).
func (gb *grantBook) nameLocked(name string, cfg *credential) *nameHealth {
	n := gb.byName[name]
	if n == nil {
		n = &nameHealth{generation: cfg.Generation}
		gb.byName[name] = n
	}
	if n.identity == "" || n.generation == "" {
		gb.moveLocked(name, n, upstreamIdentity(cfg))
	}
	return n
}

// isCurrent reports whether cfg is the config the book last saw written
// under the name.
func (n *nameHealth) isCurrent(cfg *credential) bool {
	return n.generation == "" || n.generation == cfg.Generation
}

// moveLocked files the name under identity key.
func (gb *grantBook) moveLocked(name string, n *nameHealth, key string) {
	if n.identity != key {
		gb.leaveLocked(name, n.identity)
	}
	n.identity = key
	gb.upstreamLocked(key).names[name] = true
}

// leaveLocked drops the name from an identity, and the identity once no
// name uses it and no attempt is in flight.
func (gb *grantBook) leaveLocked(name, key string) {
	u := gb.byIdentity[key]
	if u == nil {
		return
	}
	delete(u.names, name)
	if len(u.names) == 0 && u.attempt == nil {
		delete(gb.byIdentity, key)
	}
}

// heldError answers a grant that a hold kept from being sent. It wraps the
// refusal that started the hold, so that callers map it and hint at it as
// they would the refusal itself.
type heldError struct {
	refusal error
	until   time.Time
	now     time.Time
	// writesEndIt is false once maxRefusedWrites writes in a row were
	// refused.
	writesEndIt bool
}

func (e *heldError) Error() string {
	ends := "any write to its config ends the wait"
	if !e.writesEndIt {
		ends = fmt.Sprintf("%d config writes in a row were refused, so writes no longer end the wait", maxRefusedWrites)
	}
	return fmt.Sprintf("%s; no new attempt until %s (in %s), so that IRIS does not lock the credentials out; %s",
		e.refusal, e.until.UTC().Format(time.RFC3339), e.until.Sub(e.now).Round(time.Second), ends)
}

func (e *heldError) Unwrap() error { return e.refusal }

// attemptPendingError answers a grant that waited for the identity's one
// attempt longer than its request timeout.
type attemptPendingError struct{ waited time.Duration }

func (e *attemptPendingError) Error() string {
	return fmt.Sprintf("another grant with the same credentials (the same client ID, and username if any, at the same IRIS) did not finish within request_timeout (%s); only one is sent at a time until IRIS accepts them, so that IRIS does not lock the credentials out; try again", e.waited)
}

// ticket is a grant admit let through; record takes it back with the
// outcome.
type ticket struct {
	identity string
	epoch    uint64
	// current is false for a caller holding a config older than the last
	// write the book saw: its outcome is not the written config's.
	current bool
	// attempt is set when this grant is the identity's one attempt.
	attempt chan struct{}
}

// admit decides whether a grant may be sent now. It returns a heldError
// while the identity's credentials are held back. Password grants always,
// and other log-in grants while the config's credentials are unproven (no
// log-in grant succeeded since the start or the last write) or a hold has
// run out, go one at a time; other grants wait for its outcome, at most the config's request
// timeout, and then proceed or answer with the hold. A refresh-token grant
// proves nothing about the password, so it never is the attempt, but it
// waits for one in flight too.
func (gb *grantBook) admit(ctx context.Context, name string, cfg *credential, grant irisauth.GrantType) (ticket, error) {
	var timer *time.Timer
	for {
		gb.mu.Lock()
		n := gb.nameLocked(name, cfg)
		key := upstreamIdentity(cfg)
		u := gb.upstreamLocked(key)
		now := gb.now()
		if u.refusal != nil && now.Before(u.heldUntil) {
			gb.mu.Unlock()
			return ticket{}, u.heldErrorLocked(now)
		}
		t := ticket{identity: key, epoch: u.epoch, current: n.isCurrent(cfg)}
		logIn := grant != irisauth.GrantRefreshToken
		proven := u.refusal == nil && t.current && u.proven[cfg.Generation]
		// A password grant goes alone even once proven: a password changed
		// at Trackunit shows only in the answer to the next one, and every
		// password grant sent alongside it would be refused too and count
		// towards the user's lockout. Client credentials lock no user out.
		alone := grant == irisauth.GrantPassword
		// A refresh grant risks no lockout: it waits only for the attempt
		// of an identity still unproven.
		if (proven && !alone) || (!logIn && (proven || u.attempt == nil)) {
			gb.mu.Unlock()
			return t, nil
		}
		if u.attempt == nil {
			u.attempt = make(chan struct{})
			t.attempt = u.attempt
			gb.mu.Unlock()
			return t, nil
		}
		pending := u.attempt
		gb.mu.Unlock()

		if timer == nil {
			timer = time.NewTimer(cfg.RequestTimeout)
			defer timer.Stop()
		}
		select {
		case <-pending:
		case <-ctx.Done():
			return ticket{}, ctx.Err()
		case <-timer.C:
			return ticket{}, &attemptPendingError{waited: cfg.RequestTimeout}
		}
	}
}

// admitVerify lets the verifying grant of a config write through. It is
// not held, since the operator writing the config is the one who can fix
// what IRIS refused, unless maxRefusedWrites writes in a row were refused.
// It goes one at a time as other log-in grants do: always for a password
// grant, and while the identity is unproven for the others, whose grants
// then wait for it.
func (gb *grantBook) admitVerify(ctx context.Context, cfg *credential) (ticket, error) {
	password := cfg.logInGrant(true).Type == irisauth.GrantPassword
	var timer *time.Timer
	for {
		gb.mu.Lock()
		key := upstreamIdentity(cfg)
		u := gb.upstreamLocked(key)
		now := gb.now()
		if u.refusal != nil && now.Before(u.heldUntil) && u.refusedWrites >= maxRefusedWrites {
			gb.mu.Unlock()
			return ticket{}, u.heldErrorLocked(now)
		}
		t := ticket{identity: key, epoch: u.epoch}
		if !password && u.refusal == nil && u.proven[cfg.Generation] {
			gb.mu.Unlock()
			return t, nil
		}
		if u.attempt == nil {
			u.attempt = make(chan struct{})
			t.attempt = u.attempt
			gb.mu.Unlock()
			return t, nil
		}
		pending := u.attempt
		gb.mu.Unlock()
		if !password {
			// Client credentials lock nobody out: an attempt in flight is
			// not waited for.
			return t, nil
		}
		if timer == nil {
			timer = time.NewTimer(cfg.RequestTimeout)
			defer timer.Stop()
		}
		select {
		case <-pending:
		case <-ctx.Done():
			return ticket{}, ctx.Err()
		case <-timer.C:
			return ticket{}, &attemptPendingError{waited: cfg.RequestTimeout}
		}
	}
}

// heldErrorLocked is the answer to a grant the identity's hold keeps back.
func (u *upstreamHealth) heldErrorLocked(now time.Time) *heldError {
	return &heldError{refusal: u.refusal, until: u.heldUntil, now: now, writesEndIt: u.refusedWrites < maxRefusedWrites}
}

// record notes the outcome of a grant admit let through.
func (gb *grantBook) record(t ticket, name string, cfg *credential, grant irisauth.GrantType, err error) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	now := gb.now()
	if n := gb.byName[name]; n != nil {
		n.recentGrants = append(pruneBefore(n.recentGrants, now.Add(-grantWindow)), now)
		if n.isCurrent(cfg) {
			n.noteOutcome(now, grant, err)
		}
	}
	gb.settleLocked(t, cfg, grant, err)
}

// verifyDone ends a verifying grant's attempt. Its outcome is not the
// stored config's: a refusal of credentials that were never stored holds
// nothing (the stored ones may well be right), and a success counts once
// the config is stored (configWritten).
func (gb *grantBook) verifyDone(t ticket, cfg *credential, err error) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	grant := cfg.logInGrant(true).Type
	t.current = false
	gb.settleLocked(t, cfg, grant, nil)
	// A refused verification is a refused write all the same; past the
	// bound it holds the identity, as a refused read would.
	if u := gb.byIdentity[t.identity]; u != nil && refusesCredentials(grant, err) {
		u.refusedWrites++
		if u.refusedWrites >= maxRefusedWrites {
			u.holdLocked(gb.now(), err)
		}
	}
}

// settleLocked ends the ticket's attempt and applies its outcome to the
// identity, unless a config write came since it was admitted.
func (gb *grantBook) settleLocked(t ticket, cfg *credential, grant irisauth.GrantType, err error) {
	u := gb.byIdentity[t.identity]
	if t.attempt != nil {
		close(t.attempt)
		if u != nil && u.attempt == t.attempt {
			u.attempt = nil
			if len(u.names) == 0 {
				delete(gb.byIdentity, t.identity)
			}
		}
	}
	if u == nil || u.epoch != t.epoch || !t.current {
		return
	}
	switch {
	case err == nil && grant != irisauth.GrantRefreshToken:
		u.proven[cfg.Generation] = true
		u.refusal, u.heldUntil, u.holdLength = nil, time.Time{}, 0
		u.refusedWrites, u.writeUnsettled = 0, false
	case err != nil && refusesCredentials(grant, err):
		if u.writeUnsettled {
			u.refusedWrites++
			u.writeUnsettled = false
		}
		u.holdLocked(gb.now(), err)
	}
}

// holdLocked starts a hold, or doubles the one that ran out.
func (u *upstreamHealth) holdLocked(now time.Time, refusal error) {
	u.holdLength = min(max(2*u.holdLength, minCredentialHold), maxCredentialHold)
	u.heldUntil = now.Add(u.holdLength)
	u.refusal = refusal
	clear(u.proven)
}

func (n *nameHealth) noteOutcome(now time.Time, grant irisauth.GrantType, err error) {
	if err == nil {
		n.lastSuccess, n.lastSuccessGrant = now, grant
		n.consecutiveFailures = 0
		return
	}
	n.lastFailure, n.lastFailureReason = now, err.Error()
	n.consecutiveFailures++
}

// refusesCredentials tells a refusal of the credentials themselves, which
// will not pass until an operator changes them, from a refused refresh
// token, which the password grant replaces. A 401 or 403 without an OAuth
// error is a refusal of the client too: retrying it at read pace would
// count against a lockout policy all the same.
func refusesCredentials(grant irisauth.GrantType, err error) bool {
	if irisauth.IsRejected(err, "invalid_client") || irisauth.IsClientRefused(err) {
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

// configWritten follows a config stored under name: it ends the hold of
// the config's identity, since the write may have fixed what IRIS refused,
// and starts a new epoch in which the config is unproven, unless its
// verifying grant just succeeded (verified), which counts as the name's
// grant. A write that changes the generation starts the name's counters
// afresh.
func (gb *grantBook) configWritten(name string, cfg *credential, verified bool) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	n := gb.byName[name]
	if n == nil || n.generation != cfg.Generation {
		fresh := &nameHealth{generation: cfg.Generation}
		if n != nil {
			fresh.identity = n.identity
		}
		n = fresh
		gb.byName[name] = n
	}
	gb.moveLocked(name, n, upstreamIdentity(cfg))
	u := gb.byIdentity[n.identity]
	u.epoch++
	clear(u.proven)
	switch {
	case verified:
		u.refusal, u.heldUntil, u.holdLength = nil, time.Time{}, 0
		u.refusedWrites, u.writeUnsettled = 0, false
	case u.refusedWrites < maxRefusedWrites:
		u.refusal, u.heldUntil, u.holdLength = nil, time.Time{}, 0
		u.writeUnsettled = true
	}
	if verified {
		now := gb.now()
		u.proven[cfg.Generation] = true
		n.recentGrants = append(pruneBefore(n.recentGrants, now.Add(-grantWindow)), now)
		n.noteOutcome(now, cfg.logInGrant(true).Type, nil)
	}
}

// configChanged follows a config written elsewhere (replicated storage):
// what it holds is not known here, so its identity's hold ends, the
// identity is unproven, and the name's counters start afresh. Until the
// next local write every caller of the name counts as current: a hold
// started by a straggler is safe, a config never proven is not.
func (gb *grantBook) configChanged(name string) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	n := gb.byName[name]
	if n == nil {
		return
	}
	if u := gb.byIdentity[n.identity]; u != nil {
		u.epoch++
		u.refusal, u.heldUntil, u.holdLength = nil, time.Time{}, 0
		clear(u.proven)
	}
	gb.byName[name] = &nameHealth{identity: n.identity}
}

// forget drops a name's record, when its config is deleted. The identity's
// hold stays while other names use it.
func (gb *grantBook) forget(name string) {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	if n := gb.byName[name]; n != nil {
		gb.leaveLocked(name, n.identity)
		delete(gb.byName, name)
	}
}

// revocationPaused reports whether remote revocation is being skipped.
func (gb *grantBook) revocationPaused(name string) bool {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	n := gb.byName[name]
	return n != nil && gb.now().Before(n.revocationPausedUntil)
}

// revocationFailed pauses remote revocation after an endpoint that did not
// answer; a refusal or a bad answer came quickly and pauses nothing.
func (gb *grantBook) revocationFailed(name string, cfg *credential, err error) {
	var e *irisauth.Error
	if !errors.As(err, &e) || (e.Kind != irisauth.KindTimeout && e.Kind != irisauth.KindUnreachable) {
		return
	}
	gb.mu.Lock()
	defer gb.mu.Unlock()
	gb.nameLocked(name, cfg).revocationPausedUntil = gb.now().Add(revocationPause)
}

// grantReport is what status/ shows of the runtime records: the counters
// of the name's own grants, and the hold of its identity.
type grantReport struct {
	LastSuccess         time.Time
	LastSuccessGrant    irisauth.GrantType
	LastFailure         time.Time
	LastFailureReason   string
	ConsecutiveFailures int
	GrantsLastHour      int
	HeldUntil           time.Time
	HeldBecause         string
}

func (gb *grantBook) report(name string, cfg *credential) grantReport {
	gb.mu.Lock()
	defer gb.mu.Unlock()
	var r grantReport
	if n := gb.byName[name]; n != nil && n.isCurrent(cfg) {
		r = grantReport{
			LastSuccess:         n.lastSuccess,
			LastSuccessGrant:    n.lastSuccessGrant,
			LastFailure:         n.lastFailure,
			LastFailureReason:   n.lastFailureReason,
			ConsecutiveFailures: n.consecutiveFailures,
		}
		n.recentGrants = pruneBefore(n.recentGrants, gb.now().Add(-grantWindow))
		r.GrantsLastHour = len(n.recentGrants)
	}
	if u := gb.byIdentity[upstreamIdentity(cfg)]; u != nil && u.refusal != nil {
		r.HeldUntil, r.HeldBecause = u.heldUntil, u.refusal.Error()
	}
	return r
}

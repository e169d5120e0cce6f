package iris

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns the replacement of shared tokens ahead of time: which
// sessions are in use (read tracking), which of them are due, and a bounded
// pool of grants that replaces them without readers waiting on IRIS. It
// scales with the work, not with the mount: a pass over ten thousand
// sessions that are not due costs map look-ups, and however many are due,
// at most maxBackgroundGrants grants are in flight.

const (
	// backgroundLead is how far ahead of its refresh point a session is due
	// in the background; Vault runs the periodic function about once a
	// minute.
	backgroundLead = 2 * time.Minute

	// A 429 pauses background grants for at least this long, doubling on
	// each further 429 up to the maximum.
	minBackgroundPause = 30 * time.Second
	maxBackgroundPause = 5 * time.Minute
)

// backgroundRefresher runs the background grants of one mount.
type backgroundRefresher struct {
	ctx    context.Context // ends when the mount is cleaned up
	cancel context.CancelFunc

	now func() time.Time

	// readMu guards lastRead apart from the queue: every token/ read marks
	// its session, and must not wait on a periodic pass.
	readMu   sync.Mutex
	lastRead map[string]time.Time // which sessions are in use, and since when

	mu          sync.Mutex
	queue       []string        // due names not yet started, oldest first
	pending     map[string]bool // queued or in flight
	workers     int
	pausedUntil time.Time
	pause       time.Duration
	idle        *sync.Cond // signalled when the last worker stops
}

func newBackgroundRefresher(now func() time.Time) *backgroundRefresher {
	ctx, cancel := context.WithCancel(context.Background())
	r := &backgroundRefresher{ctx: ctx, cancel: cancel, now: now,
		lastRead: make(map[string]time.Time), pending: make(map[string]bool)}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// markRead notes that someone uses the named session.
func (r *backgroundRefresher) markRead(name string) {
	r.readMu.Lock()
	r.lastRead[name] = r.now()
	r.readMu.Unlock()
}

// forgetRead prunes a deleted credential from the read tracking.
func (r *backgroundRefresher) forgetRead(name string) {
	r.readMu.Lock()
	delete(r.lastRead, name)
	r.readMu.Unlock()
}

// everRead reports whether the named session was read since the process
// started: a cheap test that spares the periodic pass loading, from
// storage, entries it would not queue anyway.
func (r *backgroundRefresher) everRead(name string) bool {
	r.readMu.Lock()
	defer r.readMu.Unlock()
	_, ok := r.lastRead[name]
	return ok
}

// readSince reports whether the named session was read at or after t.
func (r *backgroundRefresher) readSince(name string, t time.Time) bool {
	r.readMu.Lock()
	defer r.readMu.Unlock()
	last, ok := r.lastRead[name]
	return ok && !last.Before(t)
}

// backgroundDueAt is when the session is replaced in the background: at a
// point between half its life (a token is always served at least that long)
// and its refresh point less the lead, chosen by a hash of its name and
// token, so that many sessions obtained at once are spread over that window
// instead of all being replaced in the same minute.
func backgroundDueAt(name string, sess *tokenSession, cfg *credential) time.Time {
	earliest := sess.ObtainedAt.Add(sess.lifetime() / 2)
	latest := sess.refreshAt(cfg).Add(-backgroundLead)
	window := latest.Sub(earliest)
	if window <= 0 {
		return earliest
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	_, _ = h.Write([]byte(sess.AccessToken))
	return latest.Add(-time.Duration(h.Sum64() % uint64(window)))
}

// periodicRefresh queues, for replacement ahead of time, the sessions that
// someone has read and that are due, and returns: the grants run in the
// mount's pool. A session nobody read since it was obtained is left to
// expire: refreshing it forever would keep a token alive for no one. Only
// a node that may write storage runs it (periodic checks).
func (b *backend) periodicRefresh(ctx context.Context, req *logical.Request) error {
	began := time.Now()
	names, err := listSessionNames(ctx, req.Storage)
	if err != nil {
		return fmt.Errorf("listing the shared tokens to refresh: %w", err)
	}
	limit, err := b.maxBackgroundGrants(ctx, req.Storage)
	if err != nil {
		return err
	}
	var due []string
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		// Before anything is loaded: after a restart the caches are empty,
		// and loading every config and session (two storage reads each)
		// would make the first pass cost seconds at ten thousand sessions
		// and keep all of them in memory, for nothing, since a session
		// nobody read is never queued.
		if b.refresher.isPending(name) || !b.refresher.everRead(name) {
			continue
		}
		cfg, err := b.config(ctx, req.Storage, name)
		if err != nil || cfg == nil {
			continue
		}
		sess, err := b.session(ctx, req.Storage, name)
		if err != nil || sess == nil || sess.Generation != cfg.Generation {
			continue
		}
		if b.now().Before(backgroundDueAt(name, sess, cfg)) || !b.refresher.readSince(name, sess.ObtainedAt) {
			continue
		}
		due = append(due, name)
	}
	b.refresher.enqueue(due, limit, func(name string) error {
		return b.refreshInBackground(req.Storage, refFor(req, name))
	})
	b.metrics.backgroundPasses.Observe(time.Since(began).Seconds())
	// Operators (and the scale benchmark) read what a pass costs here.
	b.Logger().Debug("background refresh pass", "sessions", len(names), "queued", len(due),
		"took", time.Since(began).String())
	return nil
}

// refreshInBackground replaces one due session.
func (b *backend) refreshInBackground(s logical.Storage, ref credentialRef) error {
	ctx := b.refresher.ctx
	cfg, err := b.config(ctx, s, ref.name)
	if err != nil || cfg == nil {
		return err
	}
	sess, err := b.session(ctx, s, ref.name)
	if err != nil || sess == nil {
		return err
	}
	// Replaced only if it is still due: a reader may have done so meanwhile.
	_, err = b.refreshSession(ctx, s, ref.of(cfg), func(sess *tokenSession, cfg *credential) time.Time {
		return backgroundDueAt(ref.name, sess, cfg)
	})
	if err != nil && ctx.Err() == nil {
		b.Logger().Warn("background token refresh failed; readers will retry", "name", ref.name, "error", err)
	}
	return err
}

func (r *backgroundRefresher) isPending(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending[name]
}

// enqueue adds due names to the queue and starts workers up to limit.
func (r *backgroundRefresher) enqueue(names []string, limit int, refresh func(string) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range names {
		if !r.pending[name] {
			r.pending[name] = true
			r.queue = append(r.queue, name)
		}
	}
	for r.workers < limit && len(r.queue) > 0 {
		r.workers++
		go r.work(refresh)
	}
}

// work runs queued refreshes until the queue is empty, the mount goes away,
// or IRIS asks for a pause.
func (r *backgroundRefresher) work(refresh func(string) error) {
	for {
		r.mu.Lock()
		if len(r.queue) == 0 || r.ctx.Err() != nil || r.now().Before(r.pausedUntil) {
			// What is left is queued again by a later pass.
			for _, name := range r.queue {
				delete(r.pending, name)
			}
			r.queue = nil
			r.workers--
			if r.workers == 0 {
				r.idle.Broadcast()
			}
			r.mu.Unlock()
			return
		}
		name := r.queue[0]
		r.queue = r.queue[1:]
		r.mu.Unlock()

		err := refresh(name)

		r.mu.Lock()
		delete(r.pending, name)
		if isRateLimited(err) && !r.now().Before(r.pausedUntil) {
			// Workers that were already waiting on IRIS when the pause began
			// do not lengthen it.
			r.pause = min(max(2*r.pause, minBackgroundPause), maxBackgroundPause)
			r.pausedUntil = r.now().Add(max(r.pause, retryAfter(err)))
		} else if err == nil {
			r.pause = 0
		}
		r.mu.Unlock()
	}
}

// wait blocks until no background grant is running; tests use it.
func (r *backgroundRefresher) wait() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.workers > 0 {
		r.idle.Wait()
	}
}

func isRateLimited(err error) bool {
	var e *irisauth.Error
	return errors.As(err, &e) && e.Kind == irisauth.KindUnavailable && e.Status == http.StatusTooManyRequests
}

func retryAfter(err error) time.Duration {
	var e *irisauth.Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// Package iris is a Vault secrets engine that hands out short-lived Trackunit
// IRIS API access tokens, so that no application, template or CI job needs an
// IRIS credential's password or client secret.
package iris

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"

	"vault-plugin-secrets-iris/irisauth"
)

// backend is one mount of the engine. Vault runs every mount of the plugin in
// one process (plugin multiplexing), so all state lives here, never in
// package variables.
type backend struct {
	*framework.Backend

	client *irisauth.Client
	now    func() time.Time

	grants    *grantBook
	refresher *backgroundRefresher
	metrics   *mountMetrics
	stored    storedEntries

	// flights lets one grant per credential run at a time.
	flights singleflight.Group

	// afterGrant, when set by a test, runs between a session grant and its
	// write-back: the window in which config changes must win.
	afterGrant func(name string)

	// closeMu guards closed, set by Clean, and the count of session
	// flights: every storage write (session, config, settings, spent
	// record) holds it for reading (ifOpen), so that none happens once
	// Clean has returned.
	closeMu      sync.RWMutex
	closed       bool
	flightsAlive int
	flightsIdle  *sync.Cond

	// lastSweep is when the periodic function last swept spent refresh
	// token records (unix seconds).
	lastSweep atomic.Int64

	// storageView is the mount's storage, for the host check every send
	// passes (checkHost), wherever the send starts.
	storageView logical.Storage
	// settingsMu orders the seeding of allowed_hosts against settings
	// writes; seededHosts is a seed this node could not store.
	settingsMu  sync.Mutex
	seededHosts atomic.Pointer[[]string]
	// settingsWriteMu makes each settings write a read-modify-write of its
	// own; it is taken before settingsMu, never after.
	settingsWriteMu sync.Mutex
}

// backendOptions are the seams tests use; Factory uses the defaults.
type backendOptions struct {
	client *irisauth.Client
	now    func() time.Time
}

// Factory is the plugin's entry point for Vault.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(backendOptions{})
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	b.client.Logger = b.Logger().Named("client")
	return b, nil
}

func newBackend(opts backendOptions) *backend {
	b := &backend{
		client: opts.client,
		now:    opts.now,
		stored: newStoredEntries(),
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.flightsIdle = sync.NewCond(&b.closeMu)
	b.grants = newGrantBook(b.now)
	b.refresher = newBackgroundRefresher(b.now)
	b.metrics = newMountMetrics(b)
	if b.client == nil {
		b.client = newIRISClient(nil)
	}
	if b.client.Now == nil {
		b.client.Now = b.now
	}
	b.client.Observe = b.metrics.observeAttempt

	b.Backend = &framework.Backend{
		Help:           strings.TrimSpace(backendHelp),
		BackendType:    logical.TypeLogical,
		RunningVersion: Version,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: sealWrappedPrefixes,
		},
		Paths: framework.PathAppend(
			pathConfig(b),
			pathCreds(b),
			pathToken(b),
			pathStatus(b),
			pathMetrics(b),
			pathSettings(b),
		),
		Secrets: []*framework.Secret{
			secretAccessToken(b),
		},
		Invalidate:     b.invalidate,
		InitializeFunc: b.initialize,
		// Background grants stop with the mount.
		Clean:        b.clean,
		PeriodicFunc: b.periodic,
	}
	return b
}

// cleanWait bounds how long Clean waits for grants to end once cancelled:
// a cancelled request returns at once, and a token obtained just before
// is revoked within maxRevocationTimeout.
const cleanWait = maxRevocationTimeout + 2*time.Second

// clean is Vault's call when the mount goes away or the plugin reloads:
// storage writes stop at once, background grants and shared-token flights
// are cancelled, and clean waits for them, within cleanWait.
func (b *backend) clean(ctx context.Context) {
	b.closeMu.Lock()
	b.closed = true
	b.closeMu.Unlock()
	b.refresher.cancel()

	done := make(chan struct{})
	go func() {
		b.refresher.wait()
		b.closeMu.Lock()
		for b.flightsAlive > 0 {
			b.flightsIdle.Wait()
		}
		b.closeMu.Unlock()
		close(done)
	}()
	timer := time.NewTimer(cleanWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		b.Logger().Warn("grants still running after the mount was cleaned up; they can no longer write storage", "waited", cleanWait.String())
	case <-ctx.Done():
	}
}

// startFlight counts a shared-token flight in, unless Clean ran.
func (b *backend) startFlight() bool {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.closed {
		return false
	}
	b.flightsAlive++
	return true
}

func (b *backend) endFlight() {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.flightsAlive--; b.flightsAlive == 0 {
		b.flightsIdle.Broadcast()
	}
}

// Setup keeps the mount's storage for the host check.
func (b *backend) Setup(ctx context.Context, conf *logical.BackendConfig) error {
	b.storageView = conf.StorageView
	return b.Backend.Setup(ctx, conf)
}

// writeOnlyFields are validated here before Vault's framework sees them: its
// type conversion quotes a value it cannot convert in the error, and Vault
// logs that error (and the audit log keeps it). A password sent twice on the
// CLI becomes a list and would be echoed back.
var writeOnlyFields = []string{keyClientSecret, keyPassword}

func malformedWriteOnlyField(req *logical.Request) string {
	for _, key := range writeOnlyFields {
		switch req.Data[key].(type) {
		case nil, string, json.Number, int, int64, float64:
		default:
			return key
		}
	}
	return ""
}

// HandleRequest refuses malformed write-only fields without quoting them,
// then hands over to the framework.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if key := malformedWriteOnlyField(req); key != "" {
		return logical.ErrorResponse("%s must be a single string", key), nil
	}
	return b.Backend.HandleRequest(ctx, req)
}

// HandleExistenceCheck runs before HandleRequest; for a malformed write-only
// field it answers without the framework, so that HandleRequest can refuse
// the request cleanly.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	if malformedWriteOnlyField(req) != "" {
		return true, false, nil
	}
	return b.Backend.HandleExistenceCheck(ctx, req)
}

// spentSweepInterval spaces the sweeps of spent refresh token records:
// they expire after days, and listing them every minute would cost for
// nothing.
const spentSweepInterval = time.Hour

// periodic is Vault's about-once-a-minute call: shared tokens are replaced
// ahead of time, and spent refresh token records swept now and then. Only a
// node that may write storage does either.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.canWriteStorage() {
		return nil
	}
	if err := b.periodicRefresh(ctx, req); err != nil {
		return err
	}
	now := b.now()
	if last := b.lastSweep.Load(); now.Sub(time.Unix(last, 0)) >= spentSweepInterval && b.lastSweep.CompareAndSwap(last, now.Unix()) {
		return b.sweepSpentRefreshTokens(ctx, req.Storage)
	}
	return nil
}

// invalidate is called by Vault Enterprise when replicated storage changes
// under us; open-source Vault never calls it.
func (b *backend) invalidate(_ context.Context, key string) {
	if key == settingsStorageKey || strings.HasPrefix(key, configStoragePrefix) {
		b.seededHosts.Store(nil)
	}
	b.stored.forgetCached(key)
	if name, ok := strings.CutPrefix(key, configStoragePrefix); ok {
		// A config written elsewhere ends a hold as a local write does.
		b.grants.configChanged(name)
	}
}

const backendHelp = `
The IRIS secrets engine issues short-lived Trackunit IRIS API access tokens.

Store a credential at config/<name>, of one of three kinds: an API user
(kind=api_user: client ID and secret, username and password; password grant),
an API key (kind=api_key: client ID and secret; client_credentials grant) or
an IrisX app installation (kind=app: client ID and secret; client_credentials
grant). The secrets never leave Vault again. Read creds/<name> for a leased
access token of your own, or token/<name> for the credential's one shared,
always-fresh token. See path-help of each path for details.
`

package iris

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// This file owns the mount's storage layout: every key, the in-memory copy
// of the entries the hot paths read, the get/put pair of each entry type,
// and the locks that order writes. The shapes themselves belong to their
// lifecycles (credential.go, session.go, settings.go); what other
// files do with the entries is theirs too.
//
//	config/<name>                 a credential (credential.go)
//	session/<name>                its shared token (session.go)
//	settings                      the mount's settings (settings.go)
//	spent-refresh-token/<sha256>  when a lease's refresh token was sent
//	                              (secret_access_token.go)
//
// A creds/ lease's refresh token is not here: Vault keeps it with the
// lease (fields.go, internalRefreshToken).

const (
	configStoragePrefix  = "config/"
	sessionStoragePrefix = "session/"
	settingsStorageKey   = "settings"
	spentStoragePrefix   = "spent-refresh-token/"
)

// sealWrappedPrefixes hold client secrets, passwords and refresh tokens.
// Only Vault Enterprise honours seal wrapping; open-source Vault stores
// these entries with its ordinary barrier encryption.
var sealWrappedPrefixes = []string{configStoragePrefix, sessionStoragePrefix}

// storedEntries is the mount's in-memory copy of stored entries, and the
// locks that order writes to them.
type storedEntries struct {
	configs  *entryCache[credential]
	sessions *entryCache[tokenSession]
	settings *entryCache[mountSettings]

	// credentialLocks order a credential's writes (config writes and
	// deletes, a grant's write-back of its session) against each other.
	credentialLocks []*locksutil.LockEntry
	// spentRecordLocks order the check-and-write of a spent record.
	spentRecordLocks []*locksutil.LockEntry
}

func newStoredEntries() storedEntries {
	return storedEntries{
		configs:          newEntryCache[credential](configStoragePrefix),
		sessions:         newEntryCache[tokenSession](sessionStoragePrefix),
		settings:         newEntryCache[mountSettings](""),
		credentialLocks:  locksutil.CreateLocks(),
		spentRecordLocks: locksutil.CreateLocks(),
	}
}

// forgetCached drops what a storage change elsewhere (Vault Enterprise's
// replication) made stale.
func (e *storedEntries) forgetCached(key string) {
	if key == settingsStorageKey {
		e.settings.forget(settingsStorageKey)
	}
	if name, ok := strings.CutPrefix(key, configStoragePrefix); ok {
		e.configs.forget(name)
		e.sessions.forget(name)
	}
	if name, ok := strings.CutPrefix(key, sessionStoragePrefix); ok {
		e.sessions.forget(name)
	}
}

// config returns the stored credential, or nil when there is none.
func (b *backend) config(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	return b.stored.configs.load(ctx, s, name)
}

// configFromStorage reads the credential from storage, not memory, for
// decisions that must not trust a copy.
func (b *backend) configFromStorage(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	return b.stored.configs.loadUncached(ctx, s, name)
}

func (b *backend) putConfig(ctx context.Context, s logical.Storage, name string, cfg *credential) error {
	return b.stored.configs.save(ctx, s, name, cfg)
}

func (b *backend) deleteConfig(ctx context.Context, s logical.Storage, name string) error {
	return b.stored.configs.delete(ctx, s, name)
}

func listConfigNames(ctx context.Context, s logical.Storage) ([]string, error) {
	names, err := s.List(ctx, configStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", configStoragePrefix, err)
	}
	return names, nil
}

// session returns the credential's stored shared token, or nil.
func (b *backend) session(ctx context.Context, s logical.Storage, name string) (*tokenSession, error) {
	return b.stored.sessions.load(ctx, s, name)
}

// sessionFromStorage reads the shared token from storage, not memory.
func (b *backend) sessionFromStorage(ctx context.Context, s logical.Storage, name string) (*tokenSession, error) {
	return b.stored.sessions.loadUncached(ctx, s, name)
}

func (b *backend) putSession(ctx context.Context, s logical.Storage, name string, sess *tokenSession) error {
	return b.stored.sessions.save(ctx, s, name, sess)
}

func (b *backend) deleteSession(ctx context.Context, s logical.Storage, name string) error {
	return b.stored.sessions.delete(ctx, s, name)
}

func listSessionNames(ctx context.Context, s logical.Storage) ([]string, error) {
	names, err := s.List(ctx, sessionStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", sessionStoragePrefix, err)
	}
	return names, nil
}

// loadSettings returns the mount's settings, defaults filled in, as a copy
// the caller may change: every send reads them (checkHost), so they are
// kept in memory like configs.
func (b *backend) loadSettings(ctx context.Context, s logical.Storage) (*mountSettings, error) {
	stored, err := b.stored.settings.load(ctx, s, settingsStorageKey)
	if err != nil {
		return nil, err
	}
	settings := &mountSettings{}
	if stored != nil {
		settings = stored.clone()
	}
	if settings.MaxBackgroundGrants == 0 {
		settings.MaxBackgroundGrants = defaultMaxBackgroundGrants
	}
	return settings, nil
}

// putSettings stores the settings and keeps a copy of its own, so that
// what the caller does with its value afterwards changes nothing the host
// check sees. Like every other write, none happens once Clean has returned.
func (b *backend) putSettings(ctx context.Context, s logical.Storage, settings *mountSettings) error {
	return b.ifOpen(func() error {
		return b.stored.settings.save(ctx, s, settingsStorageKey, settings.clone())
	})
}

// spentRecordKey is where the record of a spent refresh token lives: under
// its hash, so that the record itself is no secret.
func spentRecordKey(refreshToken string) string {
	sum := sha256.Sum256([]byte(refreshToken))
	return spentStoragePrefix + hex.EncodeToString(sum[:])
}

// spentRecord reports whether the record exists, and when the token was
// spent (zero when the record cannot be read as a time).
func spentRecord(ctx context.Context, s logical.Storage, key string) (spentAt time.Time, found bool, err error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return time.Time{}, false, err
	}
	spentAt, _ = time.Parse(time.RFC3339, string(entry.Value))
	return spentAt, true, nil
}

func putSpentRecord(ctx context.Context, s logical.Storage, key string, spentAt time.Time) error {
	return s.Put(ctx, &logical.StorageEntry{Key: key, Value: []byte(spentAt.UTC().Format(time.RFC3339))})
}

func deleteSpentRecord(ctx context.Context, s logical.Storage, key string) error {
	return s.Delete(ctx, key)
}

// listSpentRecords returns the keys of every spent record.
func listSpentRecords(ctx context.Context, s logical.Storage) ([]string, error) {
	keys, err := s.List(ctx, spentStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", spentStoragePrefix, err)
	}
	for i, k := range keys {
		keys[i] = spentStoragePrefix + k
	}
	return keys, nil
}

// undecodableEntryError says a stored entry is not of the shape it should
// be.
type undecodableEntryError struct {
	key string
	err error
}

func (e *undecodableEntryError) Error() string { return fmt.Sprintf("decoding %s: %v", e.key, e.err) }
func (e *undecodableEntryError) Unwrap() error { return e.err }

// errMountClosed answers a storage write attempted after Clean.
var errMountClosed = errors.New("the mount is being unmounted or reloaded; nothing was stored")

// withCredentialLock runs fn holding the named credential's lock, unless
// the mount was cleaned up: once Clean has returned, no config or session
// is written any more.
func (b *backend) withCredentialLock(name string, fn func() error) error {
	return b.whileOpen(locksutil.LockForKey(b.stored.credentialLocks, name), fn)
}

// withSpentRecordLock runs fn holding the lock of one spent record, unless
// the mount was cleaned up.
func (b *backend) withSpentRecordLock(key string, fn func() error) error {
	return b.whileOpen(locksutil.LockForKey(b.stored.spentRecordLocks, key), fn)
}

func (b *backend) whileOpen(lock *locksutil.LockEntry, fn func() error) error {
	lock.Lock()
	defer lock.Unlock()
	return b.ifOpen(fn)
}

// ifOpen runs fn unless Clean has run, and keeps Clean waiting until fn
// returns.
func (b *backend) ifOpen(fn func() error) error {
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return errMountClosed
	}
	return fn()
}

// canWriteStorage reports whether this node may write the mount's storage:
// not a performance standby, not a DR secondary, and not a performance
// secondary unless the mount is local.
func (b *backend) canWriteStorage() bool {
	state := b.System().ReplicationState()
	if state.HasState(consts.ReplicationPerformanceStandby | consts.ReplicationDRSecondary) {
		return false
	}
	if state.HasState(consts.ReplicationPerformanceSecondary) && !b.System().LocalMount() {
		return false
	}
	return true
}

// entryCache keeps decoded storage entries in memory: the hot paths need
// them on every read, and each storage read is a gRPC round trip to Vault.
// Every write, delete or invalidation bumps an epoch, and a load that raced
// with one is not cached, so a slow reader can never put back what a writer
// just replaced.
type entryCache[T any] struct {
	prefix string

	mu    sync.RWMutex
	items map[string]*T
	epoch uint64
}

func newEntryCache[T any](prefix string) *entryCache[T] {
	return &entryCache[T]{prefix: prefix, items: make(map[string]*T)}
}

// load returns the named entry, from memory when it can; nil when there is
// none.
func (c *entryCache[T]) load(ctx context.Context, s logical.Storage, name string) (*T, error) {
	c.mu.RLock()
	item, ok := c.items[name]
	epoch := c.epoch
	c.mu.RUnlock()
	if ok {
		return item, nil
	}
	item, err := c.loadUncached(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if item != nil {
		c.mu.Lock()
		if c.epoch == epoch {
			c.items[name] = item
		}
		c.mu.Unlock()
	}
	return item, nil
}

// loadUncached reads storage, for decisions that must not trust memory.
func (c *entryCache[T]) loadUncached(ctx context.Context, s logical.Storage, name string) (*T, error) {
	entry, err := s.Get(ctx, c.prefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading %s%s: %w", c.prefix, name, err)
	}
	if entry == nil {
		return nil, nil
	}
	item := new(T)
	if err := entry.DecodeJSON(item); err != nil {
		return nil, &undecodableEntryError{key: c.prefix + name, err: err}
	}
	if u, ok := any(item).(interface{ upgradeLoaded() }); ok {
		u.upgradeLoaded()
	}
	return item, nil
}

func (c *entryCache[T]) save(ctx context.Context, s logical.Storage, name string, item *T) error {
	entry, err := logical.StorageEntryJSON(c.prefix+name, item)
	if err != nil {
		return err
	}
	c.forget(name)
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing %s%s: %w", c.prefix, name, err)
	}
	c.mu.Lock()
	c.items[name] = item
	c.epoch++
	c.mu.Unlock()
	return nil
}

func (c *entryCache[T]) delete(ctx context.Context, s logical.Storage, name string) error {
	c.forget(name)
	if err := s.Delete(ctx, c.prefix+name); err != nil {
		return fmt.Errorf("deleting %s%s: %w", c.prefix, name, err)
	}
	c.forget(name)
	return nil
}

func (c *entryCache[T]) forget(name string) {
	c.mu.Lock()
	delete(c.items, name)
	c.epoch++
	c.mu.Unlock()
}

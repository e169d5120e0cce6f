package iris

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

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
		return nil, fmt.Errorf("decoding %s%s: %w", c.prefix, name, err)
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

package iris

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// A storage that fails chosen operations, so that every storage step of a
// path has a test of its failure, and that records every write, so that a
// test can tell what was written when.

type storageOp string

const (
	opGet    storageOp = "get"
	opPut    storageOp = "put"
	opDelete storageOp = "delete"
	opList   storageOp = "list"
)

// storageFault fails the nth call (1 = the first; 0 = every call) of op on
// keys with prefix, counted from when the fault was set.
type storageFault struct {
	op     storageOp
	prefix string
	nth    int
}

func (f storageFault) String() string {
	if f.nth == 0 {
		return fmt.Sprintf("every %s of %s", f.op, f.prefix)
	}
	return fmt.Sprintf("%s #%d of %s", f.op, f.nth, f.prefix)
}

// faultyStorage wraps a storage with faults and a log of writes.
type faultyStorage struct {
	logical.Storage

	mu     sync.Mutex
	faults []storageFault
	calls  map[storageFault]int
	failed []string // the faults that fired, as "op key"
	writes []string // every put or delete that reached the storage, as "op key"
}

func newFaultyStorage(s logical.Storage) *faultyStorage {
	return &faultyStorage{Storage: s, calls: map[storageFault]int{}}
}

// fail sets the faults, replacing earlier ones and their counts.
func (s *faultyStorage) fail(faults ...storageFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faults
	clear(s.calls)
	s.failed = nil
}

func (s *faultyStorage) check(op storageOp, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if f.op != op || !strings.HasPrefix(key, f.prefix) {
			continue
		}
		s.calls[f]++
		if f.nth == 0 || s.calls[f] == f.nth {
			s.failed = append(s.failed, string(op)+" "+key)
			// What a storage backend that lost its connection might say.
			return fmt.Errorf("injected storage failure on %s", op)
		}
	}
	if op == opPut || op == opDelete {
		s.writes = append(s.writes, string(op)+" "+key)
	}
	return nil
}

func (s *faultyStorage) fired() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.failed...)
}

func (s *faultyStorage) writesSoFar() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.writes...)
}

func (s *faultyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := s.check(opGet, key); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s *faultyStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if err := s.check(opPut, entry.Key); err != nil {
		return err
	}
	return s.Storage.Put(ctx, entry)
}

func (s *faultyStorage) Delete(ctx context.Context, key string) error {
	if err := s.check(opDelete, key); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

func (s *faultyStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := s.check(opList, prefix); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}

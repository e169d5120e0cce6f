package iris

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
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

// faultState is what a storage fault case holds between its steps: the
// lease a consumer keeps, as Vault keeps it (a failed renewal leaves it as
// it was).
type faultState struct {
	leases []*logical.Secret
}

func (st *faultState) lease() *logical.Secret { return st.leases[len(st.leases)-1] }

type faultCase struct {
	name   string
	faults []storageFault
}

type faultFamily struct {
	name  string
	cases []faultCase
	// act runs the step whose storage fails; it returns what the caller
	// sees. A background step returns nothing: its failure is logged.
	act func(env *testEnv, st *faultState) (*logical.Response, error)
	// recover runs once the faults are gone, as the next caller would.
	recover func(env *testEnv, st *faultState)
	// background: no caller; the failure must be in a log line naming the
	// credential.
	background bool
	// configWrite: the stored config must be as before or as written.
	configWrite bool
}

// Every storage step of reads, renewals, shared-token grants, config writes
// and deletes, and the periodic pass fails in turn. In every case no
// refresh token is sent twice, every refresh token IRIS still honours is
// held by the engine (or was revoked where it is not), no secret reaches an
// error, the config is as before or as written, and the caller gets an
// error that names the credential.
func TestStorageFaults(t *testing.T) {
	t.Parallel()
	readToken := func(env *testEnv, _ *faultState) { env.readToken("demo") }
	families := []faultFamily{
		{
			name: "creds read",
			cases: []faultCase{
				{"config read", []storageFault{{opGet, "config/", 1}}},
			},
			act: func(env *testEnv, st *faultState) (*logical.Response, error) {
				env.b.stored.configs.forget("demo") // a cold cache, as after a restart
				return env.request(logical.ReadOperation, "creds/demo", nil)
			},
			recover: func(env *testEnv, st *faultState) {
				st.leases = append(st.leases, issued(env.readCreds("demo"), time.Now()))
			},
		},
		{
			name: "renewal",
			cases: []faultCase{
				{"config read", []storageFault{{opGet, "config/", 1}}},
				{"spent record read", []storageFault{{opGet, spentStoragePrefix, 1}}},
				{"spent record write", []storageFault{{opPut, spentStoragePrefix, 1}}},
			},
			act: func(env *testEnv, st *faultState) (*logical.Response, error) {
				env.b.stored.configs.forget("demo")
				return env.renew(st.lease(), 0)
			},
			recover: func(env *testEnv, st *faultState) {
				resp, err := env.renew(st.lease(), 0)
				require.NoError(env.t, err)
				st.leases[len(st.leases)-1] = resp.Secret
			},
		},
		{
			name: "token grant",
			cases: []faultCase{
				{"config read", []storageFault{{opGet, "config/", 1}}},
				{"session read", []storageFault{{opGet, "session/", 1}}},
				{"write-ahead check", []storageFault{{opGet, "config/", 2}}},
				{"write-ahead", []storageFault{{opPut, "session/", 1}}},
				{"write-back check", []storageFault{{opGet, "config/", 3}}},
				{"write-back", []storageFault{{opPut, "session/", 2}}},
			},
			act: func(env *testEnv, _ *faultState) (*logical.Response, error) {
				env.clock.Advance(2400 * time.Second)
				return env.request(logical.ReadOperation, "token/demo", nil)
			},
			recover: readToken,
		},
		{
			name:        "config write",
			configWrite: true,
			cases: []faultCase{
				{"config read", []storageFault{{opGet, "config/", 1}}},
				{"config write", []storageFault{{opPut, "config/", 1}}},
				{"session read", []storageFault{{opGet, "session/", 1}}},
				{"session write", []storageFault{{opPut, "session/", 1}}},
				{"session write and the undo", []storageFault{{opPut, "session/", 1}, {opPut, "config/", 2}}},
			},
			act: func(env *testEnv, _ *faultState) (*logical.Response, error) {
				return env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"})
			},
			recover: readToken,
		},
		{
			name: "config delete",
			cases: []faultCase{
				{"config read", []storageFault{{opGet, "config/", 1}}},
				{"session read", []storageFault{{opGet, "session/", 1}}},
				{"session delete", []storageFault{{opDelete, "session/", 1}}},
				{"config delete", []storageFault{{opDelete, "config/", 1}}},
			},
			act: func(env *testEnv, _ *faultState) (*logical.Response, error) {
				return env.request(logical.DeleteOperation, "config/demo", nil)
			},
			// The lease outlives its API user in Vault, and holds its
			// refresh token until it is revoked.
			recover: func(env *testEnv, _ *faultState) { env.mustRequest(logical.DeleteOperation, "config/demo", nil) },
		},
		{
			name:       "periodic pass",
			background: true,
			cases: []faultCase{
				{"session list", []storageFault{{opList, "session/", 1}}},
				{"write-ahead", []storageFault{{opPut, "session/", 1}}},
				{"write-back", []storageFault{{opPut, "session/", 2}}},
			},
			act: func(env *testEnv, _ *faultState) (*logical.Response, error) {
				env.clock.Advance(2300 * time.Second)
				err := env.b.periodic(context.Background(), &logical.Request{Storage: env.storage, MountPoint: testMount})
				env.b.refresher.wait()
				if err != nil {
					env.recordForLeakCheck(nil, err)
					env.logs.WriteString("\n[periodic] " + err.Error())
				}
				return nil, nil
			},
			recover: func(env *testEnv, st *faultState) { env.periodic(); env.readToken("demo") },
		},
	}
	for _, fam := range families {
		for _, tc := range fam.cases {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				env := newTestEnv(t)
				storage := newFaultyStorage(env.storage)
				env.storage = storage
				env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL, "renewable_leases": true})
				env.readToken("demo")
				st := &faultState{leases: []*logical.Secret{issued(env.readCreds("demo"), time.Now())}}
				before, err := env.b.configFromStorage(context.Background(), env.storage, "demo")
				require.NoError(t, err)
				logsBefore := len(env.logs.String())

				storage.fail(tc.faults...)
				resp, err := fam.act(env, st)
				require.NotEmpty(t, storage.fired(), "the fault never fired: the case tests nothing")
				storage.fail()

				switch {
				case fam.background:
					named := "demo"
					if tc.faults[0].op == opList {
						named = "listing the shared tokens" // the pass failed before any credential
					}
					require.Contains(t, env.logs.String()[logsBefore:], named, "the failure is logged, naming the credential")
					require.Contains(t, env.logs.String()[logsBefore:], "injected storage failure")
				case err == nil && resp != nil && !resp.IsError():
					// token/ serves the current token through a failure
					// to replace it, and says so.
					require.NotEmpty(t, resp.Warnings, "a failure nobody was told of")
					require.Contains(t, resp.Warnings[0], "demo")
				default:
					if err == nil {
						err = resp.Error()
					}
					require.Error(t, err)
					require.Contains(t, err.Error(), "demo", "the error names the credential")
				}
				if fam.configWrite {
					after, err := env.b.configFromStorage(context.Background(), env.storage, "demo")
					require.NoError(t, err)
					if !reflect.DeepEqual(before, after) {
						// As written: the ttl, a new revision, nothing else.
						written := *before
						written.TTL, written.Revision = 30*time.Minute, after.Revision
						require.Equal(t, &written, after, "the config is half written")
					}
				}

				fam.recover(env, st)
				require.Zero(t, env.iris.Stats().RefreshReuse, "a refresh token was sent twice")
				require.Equal(t, env.heldRefreshTokens([]string{"demo"}, st.leases...), env.iris.LiveRefreshTokens(demoUser.Username),
					"a refresh token IRIS honours that the engine does not hold")
				env.assertNoSecrets(demoUser)
			})
		}
	}
}

package iris

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/helper/pluginutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// portableSystemView is the system view of every unit test: Vault's static
// one, minus the methods that only some servers answer. OpenBao's system
// view has no GenerateIdentityToken and no rotation jobs, and neither have
// Vault releases before 1.19 all of them; a plugin that called one would
// fail there and nowhere in Vault 1.21's tests. Each call is recorded and
// fails the test at cleanup.
type portableSystemView struct {
	*logical.StaticSystemView

	mu    sync.Mutex
	calls []string
}

func (s *portableSystemView) called(method string) error {
	s.mu.Lock()
	s.calls = append(s.calls, method)
	s.mu.Unlock()
	return fmt.Errorf("%s: not in every server's system view", method)
}

func (s *portableSystemView) unportableCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func (s *portableSystemView) GenerateIdentityToken(context.Context, *pluginutil.IdentityTokenRequest) (*pluginutil.IdentityTokenResponse, error) {
	return nil, s.called("GenerateIdentityToken")
}

func (s *portableSystemView) GetRotationInformation(context.Context, *rotation.RotationInfoRequest) (*rotation.RotationInfoResponse, error) {
	return nil, s.called("GetRotationInformation")
}

func (s *portableSystemView) RegisterRotationJob(context.Context, *rotation.RotationJobConfigureRequest) (string, error) {
	return "", s.called("RegisterRotationJob")
}

func (s *portableSystemView) DeregisterRotationJob(context.Context, *rotation.RotationJobDeregisterRequest) error {
	return s.called("DeregisterRotationJob")
}

// checkPortable fails t if the backend called a method not every server has.
func (s *portableSystemView) checkPortable(t testing.TB) {
	t.Helper()
	assert.Empty(t, s.unportableCalls(), "the backend called system-view methods that OpenBao and older Vault releases lack")
}

func TestPortableSystemViewRecordsUnportableCalls(t *testing.T) {
	t.Parallel()
	s := &portableSystemView{StaticSystemView: &logical.StaticSystemView{}}
	ctx := context.Background()
	_, err := s.GenerateIdentityToken(ctx, nil)
	require.Error(t, err)
	_, err = s.RegisterRotationJob(ctx, nil)
	require.Error(t, err)
	require.Equal(t, []string{"GenerateIdentityToken", "RegisterRotationJob"}, s.unportableCalls())
	// What the backend uses is still answered.
	s.DefaultLeaseTTLVal = 42
	var sv logical.SystemView = s
	require.EqualValues(t, 42, sv.DefaultLeaseTTL())
}

package iris

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

func TestStatusShowsHealthWithoutSecrets(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	token := env.readToken("demo")

	status := env.mustRequest(logical.ReadOperation, "status/demo", nil).Data
	require.Equal(t, "api_user", status["kind"])
	require.Equal(t, true, status["token_held"])
	require.Equal(t, true, status["refresh_token_held"])
	require.Equal(t, token.Data["expires_at"], status["token_expires_at"])
	require.NotEmpty(t, status["token_replaced_at"])
	require.Equal(t, 0, status["consecutive_failures"])
	require.Empty(t, status["grants_held_until"])
	require.Empty(t, status["grants_held_because"])
	require.Equal(t, "password", status["last_success_grant"], "the verifying grant counts")
	require.NotEmpty(t, status["last_success_at"])

	env.iris.SetPassword(demoUser.Username, "changed")
	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	status = env.mustRequest(logical.ReadOperation, "status/demo", nil).Data
	require.Equal(t, 1, status["consecutive_failures"])
	require.Contains(t, status["last_failure"], "invalid_grant")
	require.Equal(t, env.clock.Now().Add(minCredentialHold).UTC().Format(time.RFC3339), status["grants_held_until"])
	require.Equal(t, status["last_failure"], status["grants_held_because"])
	require.Equal(t, 2, status["grants_last_hour"], "the verifying grant and the refused one")

	whole, err := json.Marshal(status)
	require.NoError(t, err)
	for _, secret := range []string{demoUser.Password, demoUser.ClientSecret, token.Data["access_token"].(string), env.storedSession("demo").RefreshToken} {
		require.NotContains(t, string(whole), secret)
	}

	list := env.mustRequest(logical.ListOperation, "status/", nil)
	require.Equal(t, []string{"demo"}, list.Data["keys"])

	_, err = env.request(logical.ReadOperation, "status/nobody", nil)
	require.ErrorContains(t, err, "no credential")
}

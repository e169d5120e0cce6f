package iris

import (
	"sort"
	"strings"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns what differs between Trackunit's three kinds of credential.
// Everything else (leases, the shared token, holds, status) treats them
// alike: a kind only decides where a token comes from and how.

// The kinds' values are stored in every config and written by operators;
// they are part of the API and never renamed.
const (
	kindAPIUser = "api_user"
	kindAPIKey  = "api_key"
	kindApp     = "app"
)

// credentialKind is one kind of Trackunit credential.
type credentialKind struct {
	name            string
	defaultTokenURL string
	auth            irisauth.ClientAuth
	// actsAsUser: an API user logs in with a username and password and may
	// get refresh tokens; the other kinds are OAuth clients acting as
	// themselves (client_credentials), and get neither.
	actsAsUser bool
	// takesAccountID: the installing customer account of an app.
	takesAccountID bool
	// noun names a credential of the kind in messages ("API key %q").
	noun string
	// what an operator is told the credential is and where it comes from
	description string
	// allowedScopesAt says where the scopes it may request are set.
	allowedScopesAt string
}

var credentialKinds = map[string]*credentialKind{
	kindAPIUser: {
		name:            kindAPIUser,
		defaultTokenURL: "https://auth.trackunit.com/token",
		auth:            irisauth.AuthBasic,
		actsAsUser:      true,
		noun:            "API user",
		description:     "an API user from Trackunit Manager (Administration → API Access)",
	},
	kindAPIKey: {
		name:            kindAPIKey,
		defaultTokenURL: "https://auth.trackunit.com/token/v2",
		auth:            irisauth.AuthInBody,
		noun:            "API key",
		description:     "an API key from Trackunit's API Keys app",
		allowedScopesAt: "in Trackunit's API Keys app",
	},
	kindApp: {
		name:            kindApp,
		defaultTokenURL: "https://auth.trackunit.com/apptoken",
		auth:            irisauth.AuthInBody,
		takesAccountID:  true,
		noun:            "app installation",
		description:     "an IrisX app installation's client",
		allowedScopesAt: "by the app manifest",
	},
}

// kindNames lists the kinds for messages and help text.
func kindNames() string {
	names := make([]string, 0, len(credentialKinds))
	for name := range credentialKinds {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// secretKeys are the fields that hold this kind's secrets.
func (k *credentialKind) secretKeys() []string {
	if k.actsAsUser {
		return []string{keyClientSecret, keyPassword}
	}
	return []string{keyClientSecret}
}

// inapplicableKeys are the config fields this kind refuses, each with why.
func (k *credentialKind) inapplicableKeys() map[string]string {
	refused := map[string]string{}
	if !k.actsAsUser {
		why := "an " + k.noun + " acts as its own OAuth client (client_credentials), with no username, password or refresh token"
		refused[keyUsername] = why
		refused[keyPassword] = why
		refused[keyRenewableLeases] = why
	}
	if !k.takesAccountID {
		refused[keyAccountID] = "only an app installation has an installing account"
	}
	return refused
}

package iris

import (
	"github.com/hashicorp/vault/sdk/logical"
)

// This file owns how messages name a credential: by its name on the mount
// the request came through and by its kind, so that every error and hint
// names a path that exists and a kind that is right.

// credentialRef names a credential the way an operator reaches it: its name on
// the mount the request came through, so that hints in errors name paths
// that exist.
type credentialRef struct {
	name  string
	mount string // with its trailing slash
	// kind and scopes, once the config is known, let hints speak of them
	kind   *credentialKind
	scopes []string
}

// noun names the credential's kind in messages; before the config is known
// (or once it was deleted) just "credential".
func (r credentialRef) noun() string {
	if r.kind == nil {
		return "credential"
	}
	return r.kind.noun
}

// of completes the reference with what the config says.
func (r credentialRef) of(cfg *credential) credentialRef {
	r.kind, r.scopes = cfg.kind(), cfg.Scopes
	return r
}

func refFor(req *logical.Request, name string) credentialRef {
	mount := "<mount>/"
	if req != nil && req.MountPoint != "" {
		mount = req.MountPoint
	}
	return credentialRef{name: name, mount: mount}
}

func (r credentialRef) configPath() string { return r.mount + configStoragePrefix + r.name }

func (r credentialRef) credsPath() string { return r.mount + "creds/" + r.name }

func (r credentialRef) settingsPath() string {
	return r.mount + settingsStorageKey
}

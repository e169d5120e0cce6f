package iris

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "config/" + nameCapture,
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "credential",
			},
			Fields: map[string]*framework.FieldSchema{
				keyName: {
					Type:        framework.TypeString,
					Description: "Name of this IRIS credential in Vault: letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'.",
					Required:    true,
				},
				keyKind: {
					Type:        framework.TypeString,
					Description: "Kind of credential, fixed at create: api_user (the default; Trackunit Manager's API users, password grant), api_key (API Tokens v2 from the API Keys app, scoped, client_credentials) or app (an IrisX app installation, client_credentials).",
				},
				keyAccountID: {
					Type:        framework.TypeString,
					Description: "kind=app only: the Trackunit account that installed the app. Shown on read; not a secret.",
				},
				keyClientID: {
					Type:        framework.TypeString,
					Description: "OAuth client ID of the credential. Required on create.",
				},
				keyClientSecret: {
					Type:         framework.TypeString,
					Description:  "OAuth client secret. Required on create. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				keyUsername: {
					Type:        framework.TypeString,
					Description: "kind=api_user only: username of the API user. Required on create.",
				},
				keyPassword: {
					Type:         framework.TypeString,
					Description:  "kind=api_user only: password of the API user, shown once by Trackunit Manager. Required on create. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				keyScopes: {
					Type:        framework.TypeCommaStringSlice,
					Description: "Scopes to request, as a list or a comma- or space-separated string. API users default to 'api offline_access' (offline_access makes IRIS issue refresh tokens); API keys and apps have no default and must name a subset of their allowed scopes.",
				},
				keyTokenURL: {
					Type:        framework.TypeString,
					Description: "Token endpoint. Defaults to the kind's: https://auth.trackunit.com/token, /token/v2 (api_key) or /apptoken (app). Its host must be in allowed_hosts at settings. Must be https://; http:// is accepted only for loopback hosts (local emulators).",
				},
				keyRevocationURL: {
					Type:        framework.TypeString,
					Description: "Optional RFC 7009 revocation endpoint. When set, revoking a lease makes one short best-effort call to revoke its token at IRIS. Same URL rules as token_url, allowed_hosts included; empty to unset. A token is revoked only at the revocation_url in force when it was issued.",
				},
				keyTTL: {
					Type:        framework.TypeDurationSecond,
					Description: "Upper bound on the TTL of creds/ leases, in seconds or as a duration (\"15m\"). 0 means the mount's default. A lease never outlives its access token, whatever this says.",
				},
				keyMaxTTL: {
					Type:        framework.TypeDurationSecond,
					Description: "Upper bound on the total life of a renewable creds/ lease, counted from its issue. 0 means the mount's maximum.",
				},
				keyRequestTimeout: {
					Type:        framework.TypeDurationSecond,
					Description: fmt.Sprintf("Timeout of one request to IRIS, between %s and %s.", minRequestTimeout, maxRequestTimeout),
					Default:     int(defaultRequestTimeout / time.Second),
				},
				keyRenewableLeases: {
					Type:        framework.TypeBool,
					Description: "Make creds/ leases renewable through the refresh token: each renewal returns a NEW access token. Off by default, because anyone who can renew a lease (Vault's default policy allows it for any lease ID) can then mint tokens. Read docs/configuration.md#renewable-leases-renewable_leasestrue before enabling.",
					Default:     false,
				},
				keyRefreshFloor: {
					Type:        framework.TypeDurationSecond,
					Description: "token/ replaces the shared token once less than a third of its lifetime is left, or less than this, whichever is more (at most half the lifetime). 0 means a third.",
				},
				keyVerify: {
					Type:        framework.TypeBool,
					Description: "Verify the credentials with one grant before storing them. Set false to store them without calling IRIS.",
					Default:     true,
				},
			},
			ExistenceCheck: b.configExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: withFieldValidation(b.pathConfigRead),
					Summary:  "Read an IRIS credential's settings; secrets are never returned.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    withFieldValidation(b.pathConfigWrite),
					Summary:                     "Store a new IRIS credential (API user, API key or app installation).",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    withFieldValidation(b.pathConfigWrite),
					Summary:                     "Change the named fields of a stored IRIS credential.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    withFieldValidation(b.pathConfigDelete),
					Summary:                     "Delete an IRIS credential.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    "Store an IRIS credential: an API user (client ID and secret, username and password), an API key or an app installation (client ID and secret).",
			HelpDescription: strings.TrimSpace(configHelp),
		},
		b.credentialListPath("config", "credentials", "List the names of the stored IRIS credentials.",
			"List the stored IRIS credentials.", "Lists the names under config/. Nothing else about the credentials is returned."),
	}
}

const configHelp = `
Stores one Trackunit credential, of one of three kinds (kind=…, fixed at
create):

  api_user  an API user from Trackunit Manager (Administration → API Access):
            client_id, client_secret, username and password; password grant
            at https://auth.trackunit.com/token, refresh tokens.
  api_key   an API key from the API Keys app ("API Tokens v2"): client_id,
            client_secret and the scopes to request (a subset of the key's
            allowed scopes); client_credentials at .../token/v2, 20-minute
            tokens, no refresh tokens. Least privilege: prefer these.
  app       an IrisX app installation: client_id, client_secret, scopes from
            the app manifest, and account_id; client_credentials at
            .../apptoken.

Store them here once; creds/<name> and token/<name> then hand out access
tokens. A write to a new name creates the credential and needs all its
fields. A write to an existing name changes only the fields it names; one
that changes token_url or revocation_url must carry the secrets too. Unless
verify=false, every write first obtains one token from IRIS and stores
nothing if IRIS refuses the credentials.

client_secret and password are write-only.
`

func (b *backend) configExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		// Let the handler answer with the 400; "not stored" routes it there.
		return false, nil
	}
	cfg, err := b.config(ctx, req.Storage, name)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		return errResp, nil
	}
	cfg, err := b.config(ctx, req.Storage, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	data := map[string]interface{}{
		keyKind:            cfg.kind().name,
		keyClientID:        cfg.ClientID,
		keyScopes:          cfg.Scopes,
		keyTokenURL:        cfg.TokenURL,
		keyRevocationURL:   cfg.RevocationURL,
		keyTTL:             int64(cfg.TTL / time.Second),
		keyMaxTTL:          int64(cfg.MaxTTL / time.Second),
		keyRequestTimeout:  int64(cfg.RequestTimeout / time.Second),
		keyRenewableLeases: cfg.RenewableLeases,
		keyRefreshFloor:    int64(cfg.RefreshFloor / time.Second),
	}
	if cfg.kind().actsAsUser {
		data[keyUsername] = cfg.Username
	}
	if cfg.kind().takesAccountID {
		data[keyAccountID] = cfg.AccountID
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		return errResp, nil
	}
	if err := b.deleteCredential(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	b.Logger().Info("credential deleted", "name", name)
	return nil, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		return errResp, nil
	}
	existing, err := b.config(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if req.Operation == logical.UpdateOperation && existing == nil {
		// Only reachable without an existence check (tests calling the
		// handler directly); Vault routes writes to new names to create.
		return logical.ErrorResponse("no credential %q exists; create it with all required fields", name), nil
	}

	var cfg *credential
	if existing != nil {
		copied := *existing
		cfg = &copied
		if v, ok := d.GetOk(keyKind); ok && v.(string) != cfg.kind().name {
			return logical.ErrorResponse("%s is fixed when a credential is created (%q is %s, kind %s); delete it and create it again to change it",
				keyKind, name, cfg.kind().description, cfg.kind().name), nil
		}
	} else {
		kindName := d.Get(keyKind).(string)
		if kindName == "" {
			kindName = kindAPIUser
		}
		kind, ok := credentialKinds[kindName]
		if !ok {
			return logical.ErrorResponse("%s must be one of %s", keyKind, kindNames()), nil
		}
		cfg = newCredential(kind)
	}
	if refused := inapplicableFields(cfg.kind(), d); len(refused) > 0 {
		return logical.ErrorResponse("invalid configuration for %q: %s", name, strings.Join(refused, "; ")), nil
	}
	if problems := applyConfigFields(cfg, d, existing == nil); len(problems) > 0 {
		return logical.ErrorResponse("invalid configuration for %s %q: %s", cfg.kind().noun, name, strings.Join(problems, "; ")), nil
	}
	if resp, err := b.refuseHostsNotAllowed(ctx, req, name, cfg); resp != nil || err != nil {
		return resp, err
	}
	if missing := secretsMissingForNewEndpoint(existing, cfg, d); len(missing) > 0 {
		return logical.ErrorResponse("%s %q: changing %s or %s sends the stored secrets to a new address, so the same write must carry them: %s missing; nothing was changed",
			cfg.kind().noun, name, keyTokenURL, keyRevocationURL, strings.Join(missing, " and ")), nil
	}

	cfg.ShapeVersion = configShapeVersion
	cfg.Revision = randomID()
	if existing == nil || existing.tokenIdentity() != cfg.tokenIdentity() {
		cfg.Generation = randomID()
	}
	switch {
	case existing == nil, existing.ClientID != cfg.ClientID, existing.Username != cfg.Username:
		// Another credential, whatever the name: nothing issued for the
		// previous one may act for this one.
		cfg.ID = randomID()
	default:
		cfg.ID = existing.identity()
	}

	var verified *irisauth.Token
	if d.Get(keyVerify).(bool) {
		verified, err = b.verify(ctx, cfg)
		if err != nil {
			return verifyFailure(refFor(req, name).of(cfg), err)
		}
	}

	if err := b.storeCredential(ctx, req.Storage, name, existing, cfg, verified); err != nil {
		return nil, err
	}
	b.seededHosts.Store(nil)
	b.Logger().Info("credential stored", "name", name, "created", existing == nil)
	return nil, nil
}

// refuseHostsNotAllowed answers a write whose token_url or revocation_url
// names a host the mount does not allow, before anything is sent: with
// update on config/ alone nobody can move where secrets and tokens go.
func (b *backend) refuseHostsNotAllowed(ctx context.Context, req *logical.Request, name string, cfg *credential) (*logical.Response, error) {
	settings, err := b.settingsWithHosts(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var refused []string
	for _, f := range []struct{ key, raw string }{{keyTokenURL, cfg.TokenURL}, {keyRevocationURL, cfg.RevocationURL}} {
		if f.raw == "" || hostAllowed(settings.AllowedHosts, f.raw) {
			continue
		}
		refused = append(refused, fmt.Sprintf("%s host %q is not in %s", f.key, hostEntryOf(f.raw), keyAllowedHosts))
	}
	if len(refused) == 0 {
		return nil, nil
	}
	ref := refFor(req, name)
	return logical.ErrorResponse("%s %q: %s; an operator with update on %s can allow it; nothing was stored",
		cfg.kind().noun, name, strings.Join(refused, " and "), ref.settingsPath()), nil
}

// applyConfigFields copies the request's fields into cfg and returns what is
// wrong with the result. On create, fields absent from the request keep the
// defaults cfg already holds; on update they keep the stored values.
func applyConfigFields(cfg *credential, d *framework.FieldData, creating bool) []string {
	var problems []string
	for key, dst := range map[string]*string{
		keyClientID:      &cfg.ClientID,
		keyUsername:      &cfg.Username,
		keyTokenURL:      &cfg.TokenURL,
		keyRevocationURL: &cfg.RevocationURL,
	} {
		if v, ok := d.GetOk(key); ok {
			*dst = strings.TrimSpace(v.(string))
		}
	}
	// Secrets are stored byte for byte: trimming would store another
	// password than the one written, and fail at IRIS far from the cause.
	for key, dst := range map[string]*string{
		keyClientSecret: &cfg.ClientSecret,
		keyPassword:     &cfg.Password,
	} {
		if v, ok := d.GetOk(key); ok {
			*dst = v.(string)
		}
	}
	if v, ok := d.GetOk(keyScopes); ok {
		scopes, problem := normalizeScopes(v.([]string))
		if problem != "" {
			problems = append(problems, problem)
		}
		cfg.Scopes = scopes
	}
	for key, dst := range map[string]*time.Duration{
		keyTTL:            &cfg.TTL,
		keyMaxTTL:         &cfg.MaxTTL,
		keyRequestTimeout: &cfg.RequestTimeout,
		keyRefreshFloor:   &cfg.RefreshFloor,
	} {
		if v, ok := d.GetOk(key); ok {
			*dst = time.Duration(v.(int)) * time.Second
		}
	}
	if v, ok := d.GetOk(keyRenewableLeases); ok {
		cfg.RenewableLeases = v.(bool)
	}
	if v, ok := d.GetOk(keyAccountID); ok {
		cfg.AccountID = strings.TrimSpace(v.(string))
	}
	return append(problems, cfg.validate(creating)...)
}

// inapplicableFields names the fields of the request that the kind does not
// take, each with why, so that a config never silently ignores a setting.
func inapplicableFields(kind *credentialKind, d *framework.FieldData) []string {
	var refused []string
	for key, why := range kind.inapplicableKeys() {
		if _, given := d.Raw[key]; !given || (key == keyRenewableLeases && !d.Get(key).(bool)) {
			continue
		}
		refused = append(refused, fmt.Sprintf("%s does not apply to kind %s: %s", key, kind.name, why))
	}
	sort.Strings(refused)
	return refused
}

// secretsMissingForNewEndpoint names the secrets an update must carry
// because it changes where they are sent: otherwise anyone allowed to update
// the config could point it at their own host and collect secrets they were
// never shown.
func secretsMissingForNewEndpoint(existing, cfg *credential, d *framework.FieldData) []string {
	if existing == nil || (existing.TokenURL == cfg.TokenURL && existing.RevocationURL == cfg.RevocationURL) {
		return nil
	}
	var missing []string
	for _, key := range cfg.kind().secretKeys() {
		if _, ok := d.Raw[key]; !ok {
			missing = append(missing, key)
		}
	}
	return missing
}

// verifyFailure answers a write whose verifying grant failed. IRIS refusing
// the credentials is the writer's mistake: a plain 400 error response, which
// Vault shows without wrapping. IRIS being down is not (5xx).
func verifyFailure(ref credentialRef, err error) (*logical.Response, error) {
	msg := fmt.Sprintf("credentials not stored: %s (verify=false stores them without checking)", describeUpstreamError(ref, err))
	if irisauth.IsRejected(err) {
		return logical.ErrorResponse(msg), nil
	}
	return nil, logical.CodedError(upstreamStatus(err), msg)
}

package iris

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	configStoragePrefix = "config/"
	configShapeVersion  = 1

	keyName            = "name"
	keyClientID        = "client_id"
	keyClientSecret    = "client_secret"
	keyUsername        = "username"
	keyPassword        = "password"
	keyScopes          = "scopes"
	keyTokenURL        = "token_url"
	keyRevocationURL   = "revocation_url"
	keyTTL             = "ttl"
	keyMaxTTL          = "max_ttl"
	keyRequestTimeout  = "request_timeout"
	keyRenewableLeases = "renewable_leases"
	keyVerify          = "verify"
	keyRefreshFloor    = "refresh_floor"

	defaultRequestTimeout = 10 * time.Second
	minRequestTimeout     = time.Second
	maxRequestTimeout     = 30 * time.Second
	maxNameLength         = 128
)

var defaultScopes = []string{"api", "offline_access"}

// nameRegex is Vault's usual name shape (framework.GenericNameRegex). Paths
// accept any name and check it here, so that a bad name is a clear 400
// instead of Vault's "unsupported path" 404.
var nameRegex = regexp.MustCompile(`^\w(([\w.-]+)?\w)?$`)

// nameCapture takes any non-empty rest of the path as the name; nameFrom
// then checks it.
const nameCapture = `(?P<` + keyName + `>.+)`

// apiUserConfig is one stored IRIS API user.
type apiUserConfig struct {
	// ShapeVersion lets a later release upgrade stored entries.
	ShapeVersion    int           `json:"shape_version"`
	ClientID        string        `json:"client_id"`
	ClientSecret    string        `json:"client_secret"`
	Username        string        `json:"username"`
	Password        string        `json:"password"`
	Scopes          []string      `json:"scopes"`
	TokenURL        string        `json:"token_url"`
	RevocationURL   string        `json:"revocation_url,omitempty"`
	TTL             time.Duration `json:"ttl"`
	MaxTTL          time.Duration `json:"max_ttl"`
	RequestTimeout  time.Duration `json:"request_timeout"`
	RenewableLeases bool          `json:"renewable_leases"`
	RefreshFloor    time.Duration `json:"refresh_floor"`
	// Generation changes whenever a field that decides which tokens IRIS
	// issues changes, so that state derived from an older config (a shared
	// token session, say) can tell it is stale.
	Generation string `json:"generation"`
}

func (c *apiUserConfig) credentials() Credentials {
	return Credentials{
		TokenURL:      c.TokenURL,
		RevocationURL: c.RevocationURL,
		ClientID:      c.ClientID,
		ClientSecret:  c.ClientSecret,
		Username:      c.Username,
		Password:      c.Password,
		Scopes:        c.Scopes,
	}
}

// tokenIdentity is what decides which tokens IRIS issues for this config.
func (c *apiUserConfig) tokenIdentity() string {
	return strings.Join([]string{c.ClientID, c.ClientSecret, c.Username, c.Password,
		strings.Join(c.Scopes, " "), c.TokenURL}, "\x00")
}

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "config/" + nameCapture,
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "api-user",
			},
			Fields: map[string]*framework.FieldSchema{
				keyName: {
					Type:        framework.TypeString,
					Description: "Name of this IRIS API user in Vault: letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'.",
					Required:    true,
				},
				keyClientID: {
					Type:        framework.TypeString,
					Description: "Client ID of the API user, from Trackunit Manager (Administration → API Access). Required on create.",
				},
				keyClientSecret: {
					Type:         framework.TypeString,
					Description:  "Client secret of the API user. Required on create. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				keyUsername: {
					Type:        framework.TypeString,
					Description: "Username of the API user. Required on create.",
				},
				keyPassword: {
					Type:         framework.TypeString,
					Description:  "Password of the API user, shown once by Trackunit Manager. Required on create. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				keyScopes: {
					Type:        framework.TypeCommaStringSlice,
					Description: "Scopes to request, as a list or a comma- or space-separated string. offline_access makes IRIS issue refresh tokens (API users created from 2025 on).",
					Default:     defaultScopes,
				},
				keyTokenURL: {
					Type:        framework.TypeString,
					Description: "IRIS token endpoint. Must be https://; http:// is accepted only for loopback hosts (local emulators).",
					Default:     DefaultTokenURL,
				},
				keyRevocationURL: {
					Type:        framework.TypeString,
					Description: "Optional RFC 7009 revocation endpoint. When set, revoking a lease makes one short best-effort call to revoke its token at IRIS. Same URL rules as token_url; empty to unset.",
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
					Description: "Make creds/ leases renewable through the refresh token: each renewal returns a NEW access token. Off by default, because anyone who can renew a lease (Vault's default policy allows it for any lease ID) can then mint tokens. Read the README before enabling.",
					Default:     false,
				},
				keyRefreshFloor: {
					Type:        framework.TypeDurationSecond,
					Description: "token/ replaces the shared token once less than a third of its lifetime is left, or less than this, whichever is more (at most half the lifetime). 0 means a third.",
				},
				keyVerify: {
					Type:        framework.TypeBool,
					Description: "Verify the credentials with one password grant before storing them. Set false to store them without calling IRIS.",
					Default:     true,
				},
			},
			ExistenceCheck: b.configExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: withFieldValidation(b.pathConfigRead),
					Summary:  "Read an IRIS API user's settings; secrets are never returned.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    withFieldValidation(b.pathConfigWrite),
					Summary:                     "Store a new IRIS API user.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    withFieldValidation(b.pathConfigWrite),
					Summary:                     "Change the named fields of a stored IRIS API user.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    withFieldValidation(b.pathConfigDelete),
					Summary:                     "Delete an IRIS API user.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    "Store an IRIS API user: its client ID and secret, username and password.",
			HelpDescription: strings.TrimSpace(configHelp),
		},
		{
			Pattern: "config/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "api-users",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathConfigList,
					Summary:  "List the names of the stored IRIS API users.",
				},
			},
			HelpSynopsis:    "List the stored IRIS API users.",
			HelpDescription: "Lists the names under config/. Nothing else about the users is returned.",
		},
	}
}

const configHelp = `
An API user is created by an admin in Trackunit Manager (Administration → API
Access) and comes with four secrets: client ID, client secret, username and
password. Store them here once; creds/<name> then hands out access tokens.

A write to a new name creates the user and needs client_id, client_secret,
username and password. A write to an existing name changes only the fields it
names. Unless verify=false, every write first runs one password grant against
IRIS and stores nothing if IRIS refuses the credentials.

client_secret and password are write-only.
`

// withFieldValidation rejects fields the path does not know, so that a typo
// ("client-secret") is an error instead of a silently ignored setting.
func withFieldValidation(next framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		var unknown []string
		for k := range req.Data {
			if _, ok := d.Schema[k]; !ok {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return logical.ErrorResponse("unknown field(s): %s", strings.Join(unknown, ", ")), nil
		}
		return next(ctx, req, d)
	}
}

// nameFrom returns the path's name, or a 400 response for a bad one.
func nameFrom(d *framework.FieldData) (string, *logical.Response) {
	name := d.Get(keyName).(string)
	if len(name) > maxNameLength || !nameRegex.MatchString(name) {
		return "", logical.ErrorResponse("invalid name %q: use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_', at most %d characters", truncateForMessage(name), maxNameLength)
	}
	return name, nil
}

// apiUserNameField is the schema of the paths that act for a stored API user.
func apiUserNameField() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		keyName: {
			Type:        framework.TypeString,
			Description: "Name of the API user, as stored at config/<name>.",
			Required:    true,
		},
	}
}

// apiUser resolves the path's name to its stored API user; a bad name is an
// error response, an unknown one an error.
func (b *backend) apiUser(ctx context.Context, req *logical.Request, d *framework.FieldData) (string, *apiUserConfig, *logical.Response, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		return "", nil, errResp, nil
	}
	cfg, err := b.config(ctx, req.Storage, name)
	if err != nil {
		return "", nil, nil, err
	}
	if cfg == nil {
		return "", nil, nil, unknownAPIUser(name)
	}
	return name, cfg, nil, nil
}

func truncateForMessage(s string) string {
	if runes := []rune(s); len(runes) > 64 {
		return string(runes[:64]) + "…"
	}
	return s
}

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
	return &logical.Response{Data: map[string]interface{}{
		keyClientID:        cfg.ClientID,
		keyUsername:        cfg.Username,
		keyScopes:          cfg.Scopes,
		keyTokenURL:        cfg.TokenURL,
		keyRevocationURL:   cfg.RevocationURL,
		keyTTL:             int64(cfg.TTL / time.Second),
		keyMaxTTL:          int64(cfg.MaxTTL / time.Second),
		keyRequestTimeout:  int64(cfg.RequestTimeout / time.Second),
		keyRenewableLeases: cfg.RenewableLeases,
		keyRefreshFloor:    int64(cfg.RefreshFloor / time.Second),
	}}, nil
}

func (b *backend) pathConfigList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, configStoragePrefix)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		return errResp, nil
	}
	// Under the session lock, so that a grant in flight cannot write a
	// session back after the delete: delete always wins.
	err := b.withSessionLock(name, func() error {
		if err := b.configs.delete(ctx, req.Storage, name); err != nil {
			return err
		}
		return b.sessions.delete(ctx, req.Storage, name)
	})
	if err != nil {
		return nil, err
	}
	b.Logger().Info("API user deleted", "name", name)
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
		return logical.ErrorResponse("API user %q does not exist; create it with all required fields", name), nil
	}

	cfg := &apiUserConfig{
		ShapeVersion:   configShapeVersion,
		Scopes:         defaultScopes,
		TokenURL:       DefaultTokenURL,
		RequestTimeout: defaultRequestTimeout,
	}
	if existing != nil {
		copied := *existing
		cfg = &copied
	}
	if problems := applyConfigFields(cfg, d, existing == nil); len(problems) > 0 {
		return logical.ErrorResponse("invalid configuration for API user %q: %s", name, strings.Join(problems, "; ")), nil
	}

	if existing == nil || existing.tokenIdentity() != cfg.tokenIdentity() {
		cfg.Generation = newGeneration()
	}

	var verified *Token
	if d.Get(keyVerify).(bool) {
		verified, err = b.client.PasswordGrant(ctx, cfg.credentials(), cfg.RequestTimeout)
		if err != nil {
			return verifyFailure(name, err)
		}
	}

	err = b.withSessionLock(name, func() error {
		// The verifying grant ran unlocked: a write or delete that landed
		// meanwhile must not be undone by storing a copy of what it replaced.
		current, err := b.configs.loadUncached(ctx, req.Storage, name)
		if err != nil {
			return err
		}
		if (existing == nil) != (current == nil) || (existing != nil && !reflect.DeepEqual(*existing, *current)) {
			return logical.CodedError(http.StatusConflict, fmt.Sprintf("API user %q was changed or deleted while this write ran; nothing was stored, write again", name))
		}
		if err := b.configs.save(ctx, req.Storage, name, cfg); err != nil {
			return err
		}
		if verified != nil {
			// The verifying grant's token becomes the shared token/ session,
			// so that it is not wasted and its refresh token is not left
			// alive at IRIS with nobody holding it.
			return b.sessions.save(ctx, req.Storage, name, newSession(verified, cfg.Generation))
		}
		if existing != nil && existing.Generation != cfg.Generation {
			// The shared token was obtained with the old credentials.
			return b.sessions.delete(ctx, req.Storage, name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.Logger().Info("API user stored", "name", name, "created", existing == nil)
	return nil, nil
}

// applyConfigFields copies the request's fields into cfg and returns what is
// wrong with the result. On create, fields absent from the request keep the
// defaults cfg already holds; on update they keep the stored values.
func applyConfigFields(cfg *apiUserConfig, d *framework.FieldData, creating bool) []string {
	var problems []string
	for _, f := range []struct {
		key string
		dst *string
	}{
		{keyClientID, &cfg.ClientID},
		{keyClientSecret, &cfg.ClientSecret},
		{keyUsername, &cfg.Username},
		{keyPassword, &cfg.Password},
	} {
		if v, ok := d.GetOk(f.key); ok {
			*f.dst = strings.TrimSpace(v.(string))
		}
		if *f.dst == "" {
			if creating {
				problems = append(problems, f.key+" is required")
			} else {
				problems = append(problems, f.key+" must not be empty")
			}
		}
	}
	if v, ok := d.GetOk(keyScopes); ok {
		scopes, problem := normalizeScopes(v.([]string))
		if problem != "" {
			problems = append(problems, problem)
		}
		cfg.Scopes = scopes
	}
	if v, ok := d.GetOk(keyTokenURL); ok {
		cfg.TokenURL = strings.TrimSpace(v.(string))
	}
	if problem := checkEndpointURL(keyTokenURL, cfg.TokenURL, true); problem != "" {
		problems = append(problems, problem)
	}
	if v, ok := d.GetOk(keyRevocationURL); ok {
		cfg.RevocationURL = strings.TrimSpace(v.(string))
	}
	if problem := checkEndpointURL(keyRevocationURL, cfg.RevocationURL, false); problem != "" {
		problems = append(problems, problem)
	}
	if v, ok := d.GetOk(keyTTL); ok {
		cfg.TTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk(keyMaxTTL); ok {
		cfg.MaxTTL = time.Duration(v.(int)) * time.Second
	}
	if cfg.TTL < 0 || cfg.MaxTTL < 0 {
		problems = append(problems, "ttl and max_ttl must not be negative")
	} else if cfg.MaxTTL > 0 && cfg.TTL > cfg.MaxTTL {
		problems = append(problems, "ttl must not exceed max_ttl")
	}
	if v, ok := d.GetOk(keyRequestTimeout); ok {
		cfg.RequestTimeout = time.Duration(v.(int)) * time.Second
	}
	if cfg.RequestTimeout < minRequestTimeout || cfg.RequestTimeout > maxRequestTimeout {
		problems = append(problems, fmt.Sprintf("request_timeout must be between %s and %s", minRequestTimeout, maxRequestTimeout))
	}
	if v, ok := d.GetOk(keyRenewableLeases); ok {
		cfg.RenewableLeases = v.(bool)
	}
	if v, ok := d.GetOk(keyRefreshFloor); ok {
		cfg.RefreshFloor = time.Duration(v.(int)) * time.Second
	}
	if cfg.RefreshFloor < 0 {
		problems = append(problems, "refresh_floor must not be negative")
	}
	return problems
}

// normalizeScopes accepts comma- and space-separated scopes alike, since the
// OAuth wire format is space-separated and Vault's lists are comma-separated.
func normalizeScopes(in []string) ([]string, string) {
	var scopes []string
	for _, item := range in {
		for _, s := range strings.Fields(item) {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	if len(scopes) == 0 {
		return nil, "scopes must name at least one scope"
	}
	for _, s := range scopes {
		for _, r := range s {
			// RFC 6749 §3.3 scope-token characters.
			if r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e {
				return nil, fmt.Sprintf("scope %q has a character OAuth does not allow", truncateForMessage(s))
			}
		}
	}
	return scopes, ""
}

// checkEndpointURL enforces where credentials may be sent: https anywhere,
// plain http only to this machine, and never with credentials in the URL
// (config reads return it).
func checkEndpointURL(key, raw string, required bool) string {
	if raw == "" {
		if required {
			return key + " is required"
		}
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || u.Opaque != "" {
		// Not quoted: an unparsable URL may still hold credentials.
		return fmt.Sprintf("%s is not an absolute URL", key)
	}
	if u.User != nil {
		return fmt.Sprintf("%s must not contain credentials", key)
	}
	if u.Fragment != "" || u.RawQuery != "" {
		return fmt.Sprintf("%s must not have a query or fragment", key)
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return ""
		}
		return fmt.Sprintf("%s must use https:// (http:// is allowed only for loopback hosts such as 127.0.0.1)", key)
	default:
		return fmt.Sprintf("%s must use https://", key)
	}
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func newGeneration() string {
	var buf [12]byte
	if _, err := rand.Read(buf[:]); err != nil {
		// crypto/rand does not fail on supported platforms.
		panic("crypto/rand failed")
	}
	return hex.EncodeToString(buf[:])
}

// revocationTimeout keeps best-effort calls short: they run inside revoke
// and write requests that should not wait on a slow IRIS.
func revocationTimeout(cfg *apiUserConfig) time.Duration {
	return min(cfg.RequestTimeout, 3*time.Second)
}

// config returns the stored API user, or nil when there is none.
func (b *backend) config(ctx context.Context, s logical.Storage, name string) (*apiUserConfig, error) {
	return b.configs.load(ctx, s, name)
}

// verifyFailure answers a write whose verifying grant failed. IRIS refusing
// the credentials is the writer's mistake: a plain 400 error response, which
// Vault shows without wrapping. IRIS being down is not (5xx).
func verifyFailure(name string, err error) (*logical.Response, error) {
	msg := fmt.Sprintf("credentials not stored: %s (verify=false stores them without checking)", describeUpstreamError(name, err))
	if IsRejected(err) {
		return logical.ErrorResponse(msg), nil
	}
	return nil, logical.CodedError(upstreamStatus(err), msg)
}

package iris

// Every field name the engine reads or answers with, in one place, so that a
// reader sees the whole API surface and one word means one thing on every
// path. The stored JSON keys are not here: they belong to the shapes in
// storage.go and credential.go, and do not change with these names.

// Request fields of config/ (and the names config/ reads answer with).
const (
	keyName            = "name"
	keyKind            = "kind"
	keyAccountID       = "account_id"
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
)

// The mount-wide fields of settings.
const (
	keyMaxBackgroundGrants  = "max_background_grants"
	keyAllowedHosts         = "allowed_hosts"
	keyMetricsPerCredential = "metrics_per_credential"
)

// What creds/ and token/ answer with.
const (
	keyAccessToken = "access_token"
	keyTokenType   = "token_type"
	keyScope       = "scope"
	keyExpiresAt   = "expires_at"
	keyExpiresIn   = "expires_in"

	keyAgentTTL       = "ttl" // the token/ response's ttl, for Vault Agent
	keyRotationPeriod = "rotation_period"
	// keyLastRotation makes the Vault Secrets Operator treat the lease-less
	// token as a rotating static secret and re-sync after each rotation.
	keyLastRotation = "last_vault_rotation"
)

// What status/ answers with. It carries no secret, only whether one is held.
const (
	keyTokenHeld           = "token_held"
	keyTokenObtainedAt     = "token_obtained_at"
	keyTokenExpiresAt      = "token_expires_at"
	keyTokenReplacedAt     = "token_replaced_at"
	keyRefreshTokenHeld    = "refresh_token_held"
	keyLastSuccessAt       = "last_success_at"
	keyLastSuccessGrant    = "last_success_grant"
	keyLastFailureAt       = "last_failure_at"
	keyLastFailure         = "last_failure"
	keyConsecutiveFailures = "consecutive_failures"
	keyGrantsHeldUntil     = "grants_held_until"
	keyGrantsHeldBecause   = "grants_held_because"
	keyGrantsLastHour      = "grants_last_hour"
)

// A creds/ lease's internal data, which Vault keeps in its lease storage and
// hands back on renew and revoke. The refresh token lives only here and is
// never returned to a caller.
const (
	internalConfigName   = "config_name"
	internalRefreshToken = "refresh_token"
	internalAccessToken  = "access_token"
	internalGeneration   = "generation"
	// The key keeps its first name: leases issued before there were other
	// kinds carry it, and renew only if it is still read.
	internalCredentialID = "api_user_id"
	// The endpoint the lease's tokens were issued under: they go back
	// only there. Leases of earlier releases have neither.
	internalTokenURL      = "token_url"
	internalRevocationURL = "revocation_url"
)

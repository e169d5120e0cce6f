package iris

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

// Every IRIS failure reaches a Vault caller through this file, so that each
// one names the credential and its kind, says what went wrong in words an operator can act
// on, and carries a status that tells callers whether to retry.

// upstreamResponseError is the error for a read or write that called IRIS.
func upstreamResponseError(ref credentialRef, err error) error {
	return logical.CodedError(upstreamStatus(err), describeUpstreamError(ref, err))
}

// upstreamStatus maps a client error to an HTTP status: 502 when IRIS
// answered but refused or answered garbage, 503 when it could not be reached
// or is unavailable (retry later), 504 when it did not answer in time.
func upstreamStatus(err error) int {
	if isHostNotAllowed(err) {
		// The config breaks the mount's settings; IRIS was not asked.
		return http.StatusBadRequest
	}
	var irisErr *irisauth.Error
	var pending *attemptPendingError
	switch {
	case errors.As(err, &pending):
		return http.StatusServiceUnavailable
	case !errors.As(err, &irisErr):
		return http.StatusInternalServerError
	}
	switch irisErr.Kind {
	case irisauth.KindTimeout:
		return http.StatusGatewayTimeout
	case irisauth.KindUnreachable, irisauth.KindUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusBadGateway
	}
}

// describeUpstreamError is the operator-facing text of a client error. It
// has no secret in it: the client's errors carry none.
func describeUpstreamError(ref credentialRef, err error) string {
	msg := fmt.Sprintf("%s %q: %s", ref.noun(), ref.name, err)
	if hint := upstreamHint(ref, err); hint != "" {
		msg += ": " + hint
	}
	return msg
}

func upstreamHint(ref credentialRef, err error) string {
	if isHostNotAllowed(err) {
		return fmt.Sprintf("an operator with update on %s can allow it, or update the URL at %s", ref.settingsPath(), ref.configPath())
	}
	var irisErr *irisauth.Error
	if !errors.As(err, &irisErr) {
		return ""
	}
	switch irisErr.Kind {
	case irisauth.KindRejected:
		switch irisErr.Code {
		case "":
			return fmt.Sprintf("IRIS turned the client away without saying why: the client ID or client secret may be wrong, or token_url may not be IRIS's token endpoint; check them at %s", ref.configPath())
		case "invalid_grant":
			if irisErr.Grant == irisauth.GrantRefreshToken {
				return "the refresh token was refused"
			}
			return fmt.Sprintf("wrong username or password, or the API user was deleted or its password changed in Trackunit Manager; update them at %s", ref.configPath())
		case "invalid_client":
			return fmt.Sprintf("wrong client ID or client secret, or the credential was deleted in Trackunit; update client_id and client_secret at %s", ref.configPath())
		case "invalid_scope":
			if ref.kind != nil && !ref.kind.actsAsUser {
				return fmt.Sprintf("IRIS refused the scopes asked for (%s): an %s may request only the scopes allowed %s; check scopes at %s",
					strings.Join(ref.scopes, " "), ref.kind.noun, ref.kind.allowedScopesAt, ref.configPath())
			}
			return fmt.Sprintf("IRIS refused the requested scopes; check scopes at %s", ref.configPath())
		case "unauthorized_client", "unsupported_grant_type":
			return "this IRIS client is not allowed to use this grant"
		}
		return ""
	case irisauth.KindTimeout:
		return "IRIS did not answer within request_timeout; check token_url and the network, or raise request_timeout"
	case irisauth.KindUnreachable:
		return "check token_url and the network path from Vault to IRIS"
	case irisauth.KindUnavailable:
		return "try again later"
	case irisauth.KindBadResponse:
		return "check token_url"
	}
	return ""
}

func truncateForMessage(s string) string {
	if runes := []rune(s); len(runes) > 64 {
		return string(runes[:64]) + "…"
	}
	return s
}

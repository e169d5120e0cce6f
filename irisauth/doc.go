// Package irisauth speaks the OAuth 2.0 token protocol of Trackunit's IRIS
// authorization server. It knows nothing of Vault, and imports nothing from
// it, so that the protocol can be read, tested and fuzzed on its own: it
// takes plain settings and an *http.Client, and returns plain tokens and
// classified errors.
//
// A Grant is a value (endpoint, grant type, how the client authenticates,
// form fields, per-attempt timeout); every Trackunit credential kind is a
// different value handed to the same Client.Exchange.
//
// The files split the work: grant.go describes requests, transport.go sends
// one, retry.go decides whether to send it again, response.go parses a
// successful answer and errors.go classifies every failure.
package irisauth

package iris

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// What every path file shares: how a path names a credential, how unknown
// fields are refused, and how a name becomes a stored credential.

const (
	// operationPrefix names every operation in Vault's OpenAPI document.
	operationPrefix = "iris"

	maxNameLength = 128

	// nameCapture takes any non-empty rest of the path as the name; nameFrom
	// then checks it.
	nameCapture = `(?P<` + keyName + `>.+)`
)

// nameRegex is Vault's usual name shape (framework.GenericNameRegex). Paths
// accept any name and check it here, so that a bad name is a clear 400
// instead of Vault's "unsupported path" 404.
var nameRegex = regexp.MustCompile(`^\w(([\w.-]+)?\w)?$`)

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

// credentialPath is a path that reads something of one stored credential:
// <prefix>/<name>, its read operation, and its help.
func credentialPath(prefix, verb, suffix string, read *framework.PathOperation, synopsis, help string) *framework.Path {
	read.Callback = withFieldValidation(read.Callback)
	return &framework.Path{
		Pattern: prefix + "/" + nameCapture,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   verb,
			OperationSuffix: suffix,
		},
		Fields:          credentialNameField(),
		Operations:      map[logical.Operation]framework.OperationHandler{logical.ReadOperation: read},
		HelpSynopsis:    synopsis,
		HelpDescription: strings.TrimSpace(help),
	}
}

// credentialListPath lists the stored credentials' names under prefix/.
func (b *backend) credentialListPath(prefix, suffix, summary, synopsis, help string) *framework.Path {
	return &framework.Path{
		Pattern: prefix + "/?$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: suffix,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ListOperation: &framework.PathOperation{Callback: b.listCredentials, Summary: summary},
		},
		HelpSynopsis:    synopsis,
		HelpDescription: help,
	}
}

func (b *backend) listCredentials(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := listConfigNames(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

// credentialNameField is the schema of the paths that act for a stored credential.
func credentialNameField() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		keyName: {
			Type:        framework.TypeString,
			Description: "Name of the credential, as stored at config/<name>.",
			Required:    true,
		},
	}
}

// namedCredential is a stored credential as a path names it.
type namedCredential struct {
	ref credentialRef
	cfg *credential
}

// namedCredential resolves the path's name to its stored credential; a bad
// or unknown name is the caller's mistake, a 400 that says what to do.
func (b *backend) namedCredential(ctx context.Context, req *logical.Request, d *framework.FieldData) (namedCredential, error) {
	name, errResp := nameFrom(d)
	if errResp != nil {
		return namedCredential{}, logical.CodedError(http.StatusBadRequest, errResp.Error().Error())
	}
	ref := refFor(req, name)
	cfg, err := b.config(ctx, req.Storage, name)
	if err != nil {
		return namedCredential{}, err
	}
	if cfg == nil {
		return namedCredential{}, unknownCredential(ref)
	}
	return namedCredential{ref: ref.of(cfg), cfg: cfg}, nil
}

// unknownCredential is the caller's mistake of naming a credential that is not
// configured. A 400 rather than a 404: the Vault CLI prints a 404 as "No
// value found" and drops the message, which here says what to do.
func unknownCredential(ref credentialRef) error {
	return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("no credential %q is configured; write it to %s first", ref.name, ref.configPath()))
}

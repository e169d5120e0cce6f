package iris

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The mount's own settings, as opposed to each credential's at config/.

const (
	settingsStorageKey = "settings"

	keyMaxBackgroundGrants  = "max_background_grants"
	keyMetricsPerCredential = "metrics_per_credential"

	defaultMaxBackgroundGrants = 8
	maxMaxBackgroundGrants     = 64
)

// mountSettings is the stored shape of settings.
type mountSettings struct {
	MaxBackgroundGrants int `json:"max_background_grants"`
	// MetricsPerCredential is nil in settings stored before it existed,
	// which means true.
	MetricsPerCredential *bool `json:"metrics_per_credential,omitempty"`
}

func (s *mountSettings) metricsPerCredential() bool {
	return s.MetricsPerCredential == nil || *s.MetricsPerCredential
}

func pathSettings(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "settings",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "mount-settings",
		},
		Fields: map[string]*framework.FieldSchema{
			keyMaxBackgroundGrants: {
				Type: framework.TypeInt,
				Description: fmt.Sprintf("Most grants the background refresh of token/ runs at once on this mount, 1 to %d (default %d). Raise it for mounts with many thousands of credentials whose tokens were all obtained at once; lower it if IRIS rate-limits.",
					maxMaxBackgroundGrants, defaultMaxBackgroundGrants),
			},
			keyMetricsPerCredential: {
				Type:        framework.TypeBool,
				Description: "Whether metrics/ has series for each credential (default true). At ten thousand credentials a scrape takes most of a second and tens of MiB of plugin memory; false leaves them out, keeping the per-mount figures and the counts by state.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: withFieldValidation(b.pathSettingsRead),
				Summary:  "Read the mount's settings.",
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    withFieldValidation(b.pathSettingsWrite),
				Summary:                     "Change the mount's settings.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Settings of the whole mount.",
		HelpDescription: strings.TrimSpace(settingsHelp),
	}}
}

const settingsHelp = `
Settings that apply to every credential on the mount:

  max_background_grants  how many grants the background refresh of token/
                         runs at once (default 8). Shared tokens that are due
                         are replaced by at most this many grants in flight;
                         a 429 from IRIS pauses them for 30 s or more.
  metrics_per_credential whether metrics/ has series for each credential
                         (default true); false keeps a scrape of a mount
                         with many thousands of credentials cheap.
`

func (b *backend) loadSettings(ctx context.Context, s logical.Storage) (*mountSettings, error) {
	settings := &mountSettings{MaxBackgroundGrants: defaultMaxBackgroundGrants}
	entry, err := s.Get(ctx, settingsStorageKey)
	if err != nil || entry == nil {
		return settings, err
	}
	if err := entry.DecodeJSON(settings); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", settingsStorageKey, err)
	}
	return settings, nil
}

// metricsPerCredential says whether metrics/ has per-credential series.
func (b *backend) metricsPerCredential(ctx context.Context, s logical.Storage) (bool, error) {
	settings, err := b.loadSettings(ctx, s)
	if err != nil {
		return false, err
	}
	return settings.metricsPerCredential(), nil
}

// maxBackgroundGrants is the mount's bound on background grants in flight.
func (b *backend) maxBackgroundGrants(ctx context.Context, s logical.Storage) (int, error) {
	settings, err := b.loadSettings(ctx, s)
	if err != nil {
		return 0, err
	}
	return settings.MaxBackgroundGrants, nil
}

func (b *backend) pathSettingsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	settings, err := b.loadSettings(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		keyMaxBackgroundGrants:  settings.MaxBackgroundGrants,
		keyMetricsPerCredential: settings.metricsPerCredential(),
	}}, nil
}

func (b *backend) pathSettingsWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	settings, err := b.loadSettings(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if v, ok := d.GetOk(keyMaxBackgroundGrants); ok {
		settings.MaxBackgroundGrants = v.(int)
	}
	if v, ok := d.GetOk(keyMetricsPerCredential); ok {
		perCredential := v.(bool)
		settings.MetricsPerCredential = &perCredential
	}
	if settings.MaxBackgroundGrants < 1 || settings.MaxBackgroundGrants > maxMaxBackgroundGrants {
		return logical.ErrorResponse("%s must be between 1 and %d", keyMaxBackgroundGrants, maxMaxBackgroundGrants), nil
	}
	entry, err := logical.StorageEntryJSON(settingsStorageKey, settings)
	if err != nil {
		return nil, err
	}
	return nil, req.Storage.Put(ctx, entry)
}

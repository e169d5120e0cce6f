package iris

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// This file serves settings/: the schema, help and handlers of the mount's
// own settings (settings.go), as opposed to each credential's at config/.

func pathSettings(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "settings",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "mount-settings",
		},
		Fields: map[string]*framework.FieldSchema{
			keyAllowedHosts: {
				Type:        framework.TypeCommaStringSlice,
				Description: "Hosts that credentials and tokens may be sent to, as host (any port) or host:port (that port only); IPv6 as [addr]:port. Replaces the whole list. Default auth.trackunit.com. A config whose token_url or revocation_url names another host is refused on write and sends nothing.",
			},
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

  allowed_hosts          where credentials and tokens may be sent (default
                         auth.trackunit.com). Each entry is a host, which
                         allows that host on any port, or host:port, which
                         allows that port only; 127.0.0.1 allows a local
                         emulator on any loopback port. A write replaces the
                         whole list. Config writes naming another host in
                         token_url or revocation_url are refused, and a
                         stored config whose host is no longer listed gets
                         an error instead of a request.
  max_background_grants  how many grants the background refresh of token/
                         runs at once (default 8). Shared tokens that are due
                         are replaced by at most this many grants in flight;
                         a 429 from IRIS pauses them for 30 s or more.
  metrics_per_credential whether metrics/ has series for each credential
                         (default true); false keeps a scrape of a mount
                         with many thousands of credentials cheap.
`

func (b *backend) pathSettingsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	settings, err := b.settingsWithHosts(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		keyMaxBackgroundGrants:  settings.MaxBackgroundGrants,
		keyAllowedHosts:         settings.AllowedHosts,
		keyMetricsPerCredential: settings.metricsPerCredential(),
	}}, nil
}

func (b *backend) pathSettingsWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	// One write at a time, from its read to its store: a write of one field
	// that read the settings before another write's store landed would put
	// back what that write replaced (a narrowed allowed_hosts among them).
	b.settingsWriteMu.Lock()
	defer b.settingsWriteMu.Unlock()
	settings, err := b.settingsWithHosts(ctx, req.Storage)
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
	if v, ok := d.GetOk(keyAllowedHosts); ok {
		hosts, problem := normalizeAllowedHosts(v.([]string))
		if problem != "" {
			return logical.ErrorResponse("%s", problem), nil
		}
		settings.AllowedHosts = hosts
	}
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	if err := b.putSettings(ctx, req.Storage, settings); err != nil {
		return nil, err
	}
	b.seededHosts.Store(nil)
	b.Logger().Info("mount settings stored", "allowed_hosts", strings.Join(settings.AllowedHosts, ","),
		"max_background_grants", settings.MaxBackgroundGrants)
	return nil, nil
}

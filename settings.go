package iris

import (
	"context"
	"slices"

	"github.com/hashicorp/vault/sdk/logical"
)

// This file owns the mount's settings, as opposed to each credential's at
// config/: their stored shape and defaults. path_settings.go serves them.

const (
	defaultMaxBackgroundGrants = 8
	maxMaxBackgroundGrants     = 64
)

// mountSettings is the stored shape of settings. Releases before
// allowed_hosts stored only max_background_grants, or nothing at all.
type mountSettings struct {
	MaxBackgroundGrants int `json:"max_background_grants"`
	// AllowedHosts is where credentials and tokens may be sent; nil means
	// never set (see seedAllowedHosts), never "nowhere".
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
	// MetricsPerCredential is nil in settings stored before it existed,
	// which means true.
	MetricsPerCredential *bool `json:"metrics_per_credential,omitempty"`
}

// clone is a deep copy: the cached settings are shared by every request,
// and a change to a slice or pointer in one copy must not reach the others.
func (s *mountSettings) clone() *mountSettings {
	c := *s
	c.AllowedHosts = slices.Clone(s.AllowedHosts)
	if s.MetricsPerCredential != nil {
		perCredential := *s.MetricsPerCredential
		c.MetricsPerCredential = &perCredential
	}
	return &c
}

func (s *mountSettings) metricsPerCredential() bool {
	return s.MetricsPerCredential == nil || *s.MetricsPerCredential
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

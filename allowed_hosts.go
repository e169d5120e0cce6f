package iris

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// This file owns the hosts the mount's operator allows: the entries of
// allowed_hosts, how a URL is matched against them, the seed an upgraded
// mount starts from, and the one gate every send to IRIS passes (checkHost).

// defaultAllowedHost is Trackunit's own token host, where every kind's
// default token URL points.
const defaultAllowedHost = "auth.trackunit.com"

// settingsWithHosts is the stored settings with allowed_hosts filled in:
// on a mount that never stored them (one upgraded from a release without
// them, whose InitializeFunc could not write) they are what the mount's
// stored configs already use, so that an upgrade changes nothing a config
// does, and the seed is stored where this node may write.
func (b *backend) settingsWithHosts(ctx context.Context, s logical.Storage) (*mountSettings, error) {
	settings, err := b.loadSettings(ctx, s)
	if err != nil || settings.AllowedHosts != nil {
		return settings, err
	}
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	// Again under the lock: a settings write or another seeding may have
	// landed.
	if settings, err = b.loadSettings(ctx, s); err != nil || settings.AllowedHosts != nil {
		return settings, err
	}
	if seed := b.seededHosts.Load(); seed != nil {
		settings.AllowedHosts = *seed
		return settings, nil
	}
	hosts, err := b.seedAllowedHosts(ctx, s)
	if err != nil {
		return nil, err
	}
	settings.AllowedHosts = hosts
	if b.canWriteStorage() {
		err := b.putSettings(ctx, s, settings)
		if err == nil {
			b.Logger().Info("allowed_hosts recorded from the hosts stored configs use", "allowed_hosts", strings.Join(hosts, ","))
			return settings, nil
		}
		b.Logger().Warn("could not store allowed_hosts; using the hosts stored configs use until it can", "error", err)
	}
	// Remembered until a config or the settings change, since computing it
	// reads every config.
	b.seededHosts.Store(&hosts)
	return settings, nil
}

// seedAllowedHosts is the default host together with every host a stored
// config sends to.
func (b *backend) seedAllowedHosts(ctx context.Context, s logical.Storage) ([]string, error) {
	hosts := []string{defaultAllowedHost}
	names, err := listConfigNames(ctx, s)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		cfg, err := b.configFromStorage(ctx, s, name)
		var undecodable *undecodableEntryError
		if errors.As(err, &undecodable) || (err == nil && cfg == nil) {
			// Such a config sends nothing, so it adds no host.
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, raw := range []string{cfg.TokenURL, cfg.RevocationURL} {
			if entry := hostEntryOf(raw); entry != "" && !slices.Contains(hosts, entry) {
				hosts = append(hosts, entry)
			}
		}
	}
	return hosts, nil
}

// initialize runs when Vault starts the mount on a node that may write: a
// mount upgraded from a release without allowed_hosts records the hosts its
// configs use, so that they keep working.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	b.storageView = req.Storage
	if !b.canWriteStorage() {
		return nil
	}
	if _, err := b.settingsWithHosts(ctx, req.Storage); err != nil {
		// Not fatal: the first send seeds them again.
		b.Logger().Warn("could not record allowed_hosts at start", "error", err)
	}
	return nil
}

// normalizeAllowedHosts checks and normalises each entry: lower case, IPv6
// in brackets only with a port, no duplicates.
func normalizeAllowedHosts(in []string) ([]string, string) {
	hosts := []string{}
	for i, raw := range in {
		entry, problem := normalizeHostEntry(raw)
		if problem != "" {
			return nil, fmt.Sprintf("%s entry %d %s", keyAllowedHosts, i+1, problem)
		}
		if !slices.Contains(hosts, entry) {
			hosts = append(hosts, entry)
		}
	}
	if len(hosts) == 0 {
		return nil, keyAllowedHosts + " must name at least one host (the default is " + defaultAllowedHost + ")"
	}
	return hosts, ""
}

func normalizeHostEntry(raw string) (string, string) {
	entry := strings.ToLower(strings.TrimSpace(raw))
	if entry == "" {
		return "", "is empty"
	}
	if strings.Contains(entry, "@") {
		// Not quoted: whatever precedes the @ may be a password.
		return "", "has user info; give a host or host:port only"
	}
	quoted := fmt.Sprintf("%q", truncateForMessage(entry))
	if strings.Contains(entry, "://") || strings.ContainsAny(entry, "/?#\\ \t") {
		return "", quoted + " must be a host or host:port, without scheme or path"
	}
	if ip := net.ParseIP(entry); ip != nil {
		return ip.String(), ""
	}
	if strings.HasPrefix(entry, "[") && strings.HasSuffix(entry, "]") {
		if ip := net.ParseIP(entry[1 : len(entry)-1]); ip != nil && ip.To4() == nil {
			return ip.String(), ""
		}
		return "", quoted + " is not an IPv6 address"
	}
	host, port, err := net.SplitHostPort(entry)
	if err != nil {
		host, port = entry, ""
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", quoted + " has a port that is not a number from 1 to 65535"
		}
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
		if ip.To4() == nil {
			host = "[" + host + "]"
		}
	} else if !validHostname(host) {
		return "", quoted + " is not a host name or IP address"
	}
	if port == "" {
		return strings.Trim(host, "[]"), ""
	}
	return host + ":" + port, ""
}

// validHostname accepts DNS names of letters, digits and hyphens.
func validHostname(host string) bool {
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

// urlHost is the normalised host and effective port of an endpoint URL.
func urlHost(raw string) (host, port string, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return "", "", false
	}
	host = strings.ToLower(u.Hostname())
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	port = u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	return host, port, true
}

// hostEntryOf is the allowed_hosts entry that allows exactly what raw uses:
// its host, with the port when the URL names one.
func hostEntryOf(raw string) string {
	host, _, ok := urlHost(raw)
	if !ok {
		return ""
	}
	u, _ := url.Parse(raw)
	if u.Port() == "" {
		return host
	}
	return net.JoinHostPort(host, u.Port())
}

// hostAllowed reports whether raw's host is on the list: an entry without
// a port allows the host on any port, host:port that port only.
func hostAllowed(allowed []string, raw string) bool {
	host, port, ok := urlHost(raw)
	if !ok {
		return false
	}
	withPort := net.JoinHostPort(host, port)
	return slices.Contains(allowed, host) || slices.Contains(allowed, withPort)
}

// hostNotAllowedError is a send refused because the endpoint's host is not
// in allowed_hosts. Nothing was sent.
type hostNotAllowedError struct {
	field, host string
}

func (e *hostNotAllowedError) Error() string {
	return fmt.Sprintf("%s host %q is not in %s, so nothing was sent there", e.field, e.host, keyAllowedHosts)
}

func isHostNotAllowed(err error) bool {
	var h *hostNotAllowedError
	return errors.As(err, &h)
}

// checkHost is the one gate every request to IRIS passes: it refuses an
// endpoint whose host the mount's settings do not allow.
func (b *backend) checkHost(ctx context.Context, field, raw string) error {
	if b.storageView == nil {
		return fmt.Errorf("%s: the mount's storage is not set up; nothing was sent", field)
	}
	settings, err := b.settingsWithHosts(ctx, b.storageView)
	if err != nil {
		return fmt.Errorf("reading %s: %w; nothing was sent", keyAllowedHosts, err)
	}
	if hostAllowed(settings.AllowedHosts, raw) {
		return nil
	}
	host, _, _ := urlHost(raw)
	if u, err := url.Parse(raw); err == nil && u.Port() != "" {
		host = net.JoinHostPort(host, u.Port())
	}
	return &hostNotAllowedError{field: field, host: host}
}

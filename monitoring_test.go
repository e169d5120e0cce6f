package iris

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// The monitoring/ files ship with the plugin: the alerting rules must load
// and pass their unit tests, and every metric the dashboard and the rules
// name must be one the plugin exports.

// promtool finds promtool; make test installs it (scripts/install-prometheus.sh)
// and sets IRIS_REQUIRE_PROMTOOL so that the test cannot skip there.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("IRIS_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("promtool not found: %v (scripts/install-prometheus.sh installs it)", err)
		}
		t.Skip("promtool not installed; make test installs it")
	}
	return path
}

func TestMonitoringRules(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "monitoring"
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %v:\n%s", args, out)
	}
}

var metricName = regexp.MustCompile(`\biris_[a-z0-9_]*[a-z0-9]`)

// exportedMetrics scrapes a mount in which every family has a series: a
// held credential (failure, hold), a success, a background pass, leases.
func exportedMetrics(t *testing.T) (names []string, families map[string]*dto.MetricFamily) {
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.readToken("demo")
	env.periodic()
	env.readCreds("demo")
	env.iris.SetPassword(demoUser.Username, "changed")
	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	families, _ = env.scrapeMetrics()
	for name, mf := range families {
		names = append(names, name)
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names = append(names, name+"_bucket", name+"_count", name+"_sum")
		}
	}
	sort.Strings(names)
	return names, families
}

func TestMonitoringNamesExportedMetrics(t *testing.T) {
	t.Parallel()
	exported, families := exportedMetrics(t)

	dashboard, err := os.ReadFile(filepath.Join("monitoring", "grafana-dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(dashboard, &dash))
	require.NotEmpty(t, dash.Panels)
	inDashboard := map[string]bool{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, target := range p.Targets {
			names := metricName.FindAllString(target.Expr, -1)
			require.NotEmpty(t, names, "panel %q queries no iris metric: %s", p.Title, target.Expr)
			for _, name := range names {
				require.Contains(t, exported, name, "panel %q names a metric the plugin does not export", p.Title)
				inDashboard[name] = true
			}
		}
	}
	// The dashboard has a panel for every figure.
	for name := range families {
		if !inDashboard[name] && !inDashboard[name+"_bucket"] && !inDashboard[name+"_count"] {
			t.Errorf("no dashboard panel shows %s", name)
		}
	}

	for _, file := range []string{"alerts.yml", "alerts_test.yml"} {
		text, err := os.ReadFile(filepath.Join("monitoring", file))
		require.NoError(t, err)
		names := metricName.FindAllString(string(text), -1)
		require.NotEmpty(t, names)
		for _, name := range names {
			require.True(t, slices.Contains(exported, name), "%s names %s, which the plugin does not export", file, name)
		}
	}
}

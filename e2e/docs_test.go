//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// consumersPage holds the policies, the CI role and snippets, the Agent
// template and the CLI examples that the end-to-end tests run as written.
const (
	consumersPage  = "docs/consumers.md"
	monitoringPage = "docs/monitoring.md"
	// readmePage holds the install commands TestRelease runs.
	readmePage = "README.md"
)

// docPage is the text of a documentation page, named by its path from the
// repository root.
func docPage(t testing.TB, page string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(page)))
	require.NoError(t, err)
	return string(b)
}

// docBlock returns the fenced block that follows the page's
// `<!-- e2e: name -->` marker, without its fences, so that what users copy
// is what the tests run.
func docBlock(t testing.TB, page, name string) string {
	t.Helper()
	text := docPage(t, page)
	marker := "<!-- e2e: " + name + " -->"
	require.Equal(t, 1, strings.Count(text, marker), "%s must hold the marker %q exactly once", page, marker)
	_, after, _ := strings.Cut(text, marker)
	after = strings.TrimLeft(after, "\n")
	require.True(t, strings.HasPrefix(after, "```"), "%s: the %s marker is not followed by a fenced block", page, name)
	_, body, _ := strings.Cut(after, "\n")
	block, _, ok := strings.Cut(body, "```")
	require.True(t, ok, "%s: the %s block does not end", page, name)
	return block
}

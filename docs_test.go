package iris

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// maxReadmeLines keeps the README a page a newcomer reads in five minutes;
// the reference belongs in docs/.
const maxReadmeLines = 260

// docPages are the Markdown pages whose links must resolve: the README,
// the pages beside it, and every page under docs/.
func docPages(t *testing.T) []string {
	t.Helper()
	pages := []string{"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "UPGRADING.md"}
	more, err := filepath.Glob(filepath.Join("docs", "*.md"))
	require.NoError(t, err)
	require.NotEmpty(t, more, "docs/ holds no pages")
	for _, p := range more {
		pages = append(pages, filepath.ToSlash(p))
	}
	return pages
}

func TestReadmeStaysShort(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	require.NoError(t, err)
	lines := strings.Count(string(b), "\n")
	require.LessOrEqual(t, lines, maxReadmeLines,
		"README.md has %d lines; move reference material to a page under docs/", lines)
}

// TestDocLinksResolve: every relative link of every page names a file that
// exists and, where it names a heading, a heading that page has.
func TestDocLinksResolve(t *testing.T) {
	t.Parallel()
	var linked []string
	for _, page := range docPages(t) {
		for _, target := range relativeLinks(t, page) {
			file, anchor, _ := strings.Cut(target, "#")
			if file == "" {
				file = page
			} else {
				file = path.Join(path.Dir(page), file)
			}
			if page == "README.md" && strings.HasPrefix(file, "docs/") {
				linked = append(linked, file)
			}
			if _, err := os.Stat(filepath.FromSlash(file)); err != nil {
				t.Errorf("%s links to %s, which does not exist", page, target)
				continue
			}
			if anchor != "" && strings.HasSuffix(file, ".md") && !headingAnchors(t, file)[anchor] {
				t.Errorf("%s links to %s, but %s has no heading with the anchor %q", page, target, file, anchor)
			}
		}
	}
	require.NotEmpty(t, linked, "README.md links to no page under docs/")
}

// TestReadmeLinksEveryDocPage: a page under docs/ that the README does not
// link is a page no newcomer finds.
func TestReadmeLinksEveryDocPage(t *testing.T) {
	t.Parallel()
	linked := map[string]bool{}
	for _, target := range relativeLinks(t, "README.md") {
		file, _, _ := strings.Cut(target, "#")
		linked[path.Clean(file)] = true
	}
	for _, page := range docPages(t) {
		if strings.HasPrefix(page, "docs/") && !linked[page] {
			t.Errorf("README.md does not link to %s", page)
		}
	}
}

var mdLinkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// relativeLinks are the targets of the page's inline links outside fenced
// code, without those that leave the repository.
func relativeLinks(t *testing.T, page string) []string {
	t.Helper()
	var links []string
	for _, line := range proseLines(t, page) {
		for _, m := range mdLinkRE.FindAllStringSubmatch(line, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links = append(links, target)
		}
	}
	return links
}

// headingAnchors are the anchors GitHub gives the page's headings.
func headingAnchors(t *testing.T, page string) map[string]bool {
	t.Helper()
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range proseLines(t, page) {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		text, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok {
			continue
		}
		slug := headingSlug(text)
		if n := seen[slug]; n > 0 {
			anchors[slug+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

// headingSlug is GitHub's anchor for a heading: lower case, spaces to
// hyphens, and every character dropped that is not a letter, a digit, a
// hyphen or an underscore.
func headingSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// proseLines are the page's lines outside fenced code blocks.
func proseLines(t *testing.T, page string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(page))
	require.NoError(t, err, "%s", page)
	var lines []string
	fenced := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestHeadingSlug(t *testing.T) {
	t.Parallel()
	for heading, want := range map[string]string{
		"Which kind should I use?":                        "which-kind-should-i-use",
		"Credentials: `iris/config/<name>`":               "credentials-irisconfigname",
		"Renewable leases (`renewable_leases=true`)":      "renewable-leases-renewable_leasestrue",
		"What Vault's default policy still allows":        "what-vaults-default-policy-still-allows",
		"Shared-token readers: Vault Agent, the Operator": "shared-token-readers-vault-agent-the-operator",
	} {
		require.Equal(t, want, headingSlug(heading), "%q", heading)
	}
}

// TestDocsNameTestsThatExist: the docs cite tests as the proof of their
// promises ("checked by"); a renamed or deleted test must not leave a
// promise pointing at nothing.
func TestDocsNameTestsThatExist(t *testing.T) {
	t.Parallel()
	defined := map[string]bool{}
	testFunc := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (p == "bin" || p == "tools" || strings.HasPrefix(d.Name(), ".")) && p != "." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range testFunc.FindAllStringSubmatch(string(b), -1) {
				defined[m[1]] = true
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.True(t, defined["TestDocsNameTestsThatExist"], "the walk found no tests")
	cited := regexp.MustCompile("`(Test[A-Za-z0-9_]+)[/`]")
	for _, page := range docPages(t) {
		b, err := os.ReadFile(page)
		require.NoError(t, err)
		for _, m := range cited.FindAllStringSubmatch(string(b), -1) {
			if !defined[m[1]] {
				t.Errorf("%s cites %s, which no test file defines", page, m[1])
			}
		}
	}
}

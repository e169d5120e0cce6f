//go:build e2e

package e2e

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// recorder collects everything a user or operator could see (CLI output, API
// responses, the server's log) and every secret that must never appear in
// any of it, so that one check at the end covers the whole run.
type recorder struct {
	mu       sync.Mutex
	outputs  []recorded
	logFiles []recorded // text is the path
	secrets  []secret
	// sources register more secrets when the check runs: secrets that
	// keep appearing during the run, such as every token an emulator
	// issued.
	sources []func(*recorder)
}

type recorded struct{ label, text string }

type secret struct {
	label string
	value string
	// logOnly secrets are handed to callers on purpose (access tokens from
	// creds reads) but must still never reach a log.
	logOnly bool
}

func newRecorder() *recorder { return &recorder{} }

func (r *recorder) addOutput(label, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outputs = append(r.outputs, recorded{label, text})
}

func (r *recorder) addLogFile(label, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logFiles = append(r.logFiles, recorded{label, path})
}

// addSecretSource registers fn to add secrets to r when checkNoLeaks runs.
func (r *recorder) addSecretSource(fn func(*recorder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sources = append(r.sources, fn)
}

// addSecret registers a value that must appear in no output and no log.
func (r *recorder) addSecret(label, value string) { r.add(label, value, false) }

// addLogSecret registers a value that callers may see but logs must not.
func (r *recorder) addLogSecret(label, value string) { r.add(label, value, true) }

func (r *recorder) add(label, value string, logOnly bool) {
	if value == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, form := range secretForms(value) {
		r.secrets = append(r.secrets, secret{label, form, logOnly})
	}
}

// secretForms are the strings whose presence betrays value: the value itself,
// its URL and form encodings, and every long alphanumeric run in it, which
// survives JSON, Go %q and URL escaping alike.
func secretForms(value string) []string {
	forms := []string{value, url.QueryEscape(value), url.PathEscape(value)}
	for _, run := range strings.FieldsFunc(value, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		if len(run) >= 16 {
			forms = append(forms, run)
		}
	}
	var out []string
	for _, f := range forms {
		if !contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// counts reports what the check will cover, for the positive controls.
func (r *recorder) counts() (outputs, logs, secrets int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.outputs), len(r.logFiles), len(r.secrets)
}

// outputsContaining is how many recorded outputs contain s.
func (r *recorder) outputsContaining(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, o := range r.outputs {
		if strings.Contains(o.text, s) {
			n++
		}
	}
	return n
}

// checkNoLeaks fails the test for every secret found in a recorded output or
// log file. The report masks the secret, so that the failure output does
// not repeat the leak.
func (r *recorder) checkNoLeaks(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	adders := slices.Clone(r.sources)
	r.mu.Unlock()
	for _, add := range adders {
		add(r)
	}
	r.mu.Lock()
	outputs := append([]recorded(nil), r.outputs...)
	logFiles := append([]recorded(nil), r.logFiles...)
	secrets := append([]secret(nil), r.secrets...)
	r.mu.Unlock()

	type source struct {
		label, text string
		isLog       bool
	}
	var sources []source
	for _, o := range outputs {
		sources = append(sources, source{o.label, o.text, false})
	}
	for _, lf := range logFiles {
		b, err := os.ReadFile(lf.text)
		if err != nil {
			t.Errorf("leak check: reading %s: %v", lf.label, err)
			continue
		}
		sources = append(sources, source{lf.label + " " + lf.text, string(b), true})
	}

	leaks := 0
	for _, src := range sources {
		for _, s := range secrets {
			if s.logOnly && !src.isLog {
				continue
			}
			if i := strings.Index(src.text, s.value); i >= 0 {
				leaks++
				if leaks <= 20 {
					t.Errorf("SECRET LEAK: %s appears in %s: …%s…", s.label, src.label, maskedContext(src.text, i, len(s.value)))
				}
			}
		}
	}
	if leaks > 20 {
		t.Errorf("SECRET LEAK: %d more leaks not shown", leaks-20)
	}
}

func maskedContext(text string, i, n int) string {
	start, end := max(i-60, 0), min(i+n+60, len(text))
	return fmt.Sprintf("%q", text[start:i]+"<SECRET>"+text[i+n:end])
}

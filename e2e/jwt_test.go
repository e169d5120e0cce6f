//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The CI job of docs/consumers.md, end to end: a job token signed like a CI provider's
// OIDC token, Vault's JWT auth method bound to its claims, and the page's
// shell snippet run verbatim.

// githubIssuer is the issuer of GitHub Actions' OIDC tokens, which the
// page's JWT config binds.
const githubIssuer = "https://token.actions.githubusercontent.com"

// jwtSigner signs job tokens with a key only this test holds, standing in
// for the CI provider's.
type jwtSigner struct {
	key *rsa.PrivateKey
	kid string
}

func newJWTSigner(t testing.TB) *jwtSigner {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return &jwtSigner{key: key, kid: randomHex(8)}
}

// publicKeyPEM is the form auth/jwt/config's jwt_validation_pubkeys takes.
func (s *jwtSigner) publicKeyPEM(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// sign returns a compact JWS (RS256) of claims.
func (s *jwtSigner) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": s.kid}) + "." + enc(claims)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, digest[:])
	require.NoError(t, err)
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// githubJobClaims are the claims GitHub Actions puts in a job's OIDC token
// for a push to ref of repository, requested for audience.
func githubJobClaims(audience, repository, ref string) map[string]any {
	now := time.Now()
	owner, _, _ := strings.Cut(repository, "/")
	return map[string]any{
		"iss":              githubIssuer,
		"aud":              audience,
		"sub":              "repo:" + repository + ":ref:" + ref,
		"repository":       repository,
		"repository_owner": owner,
		"ref":              ref,
		"ref_type":         "branch",
		"sha":              randomHex(20),
		"workflow":         "deploy",
		"job_workflow_ref": repository + "/.github/workflows/deploy.yml@" + ref,
		"event_name":       "push",
		"actor":            "octocat",
		"run_id":           "4242",
		"jti":              randomHex(16),
		"iat":              now.Unix(),
		"nbf":              now.Add(-5 * time.Second).Unix(),
		"exp":              now.Add(5 * time.Minute).Unix(),
	}
}

// ciRole is the page's JWT role, as far as the test needs to know it.
type ciRole struct {
	RoleType       string            `json:"role_type"`
	BoundAudiences []string          `json:"bound_audiences"`
	BoundClaims    map[string]string `json:"bound_claims"`
	TokenPolicies  []string          `json:"token_policies"`
}

// ciRoleName is the role the page's snippet and vault-action log in to.
const ciRoleName = "ci"

// configureJWT sets up auth/jwt as the page does, with the signer's
// public key in place of GitHub's discovery URL, and the page's role
// verbatim.
func configureJWT(t *testing.T, v *vaultServer, signer *jwtSigner) ciRole {
	t.Helper()
	setup := docBlock(t, consumersPage, "ci-role.json")
	var role ciRole
	require.NoError(t, json.Unmarshal([]byte(setup), &role))
	require.Equal(t, []string{policyCI}, role.TokenPolicies, "the page's CI role grants another policy than the CI policy")
	require.Len(t, role.BoundAudiences, 1)
	require.NotEmpty(t, role.BoundClaims["repository"], "the page's CI role is not bound to a repository")

	page := docPage(t, consumersPage)
	for _, line := range []string{
		"vault auth enable jwt",
		"bound_issuer=" + githubIssuer,
		"vault policy write " + policyCI + " " + policyCI + ".hcl",
		"vault write auth/jwt/role/" + ciRoleName + " @ci-role.json",
	} {
		require.Contains(t, page, line, "the page's JWT setup")
	}

	v.mustCLI(t, "auth", "enable", "jwt")
	keyPath := filepath.Join(v.dir, "ci-provider.pem")
	require.NoError(t, os.WriteFile(keyPath, []byte(signer.publicKeyPEM(t)), 0o600))
	v.mustCLI(t, "write", "auth/jwt/config", "jwt_validation_pubkeys=@"+keyPath, "bound_issuer="+githubIssuer)
	rolePath := filepath.Join(v.dir, "ci-role.json")
	require.NoError(t, os.WriteFile(rolePath, []byte(setup), 0o600))
	v.mustCLI(t, "write", "auth/jwt/role/"+ciRoleName, "@"+rolePath)
	return role
}

// ciShell runs the page's CI snippet in sh, as a CI runner would, with
// vault on PATH and a curl stub that records its arguments.
type ciShell struct {
	dir      string
	curlArgs string
	path     string
}

func newCIShell(t testing.TB, v *vaultServer) *ciShell {
	t.Helper()
	dir, err := os.MkdirTemp(v.dir, "ci-")
	require.NoError(t, err)
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "home"), 0o700))
	vault, err := filepath.Abs(vaultBin)
	require.NoError(t, err)
	require.NoError(t, os.Symlink(vault, filepath.Join(bin, "vault")))
	s := &ciShell{dir: dir, curlArgs: filepath.Join(dir, "curl-args"), path: bin + string(os.PathListSeparator) + "/usr/bin:/bin"}
	stub := "#!/bin/sh\nprintf '%s\\n' \"$@\" > '" + s.curlArgs + "'\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "curl"), []byte(stub), 0o755))
	return s
}

// run runs script with the job token in CI_JOB_JWT; it returns the
// arguments curl was called with (nil if it was not) and the shell's result.
func (s *ciShell) run(t testing.TB, v *vaultServer, script, jobJWT string) ([]string, cliResult) {
	t.Helper()
	_ = os.Remove(s.curlArgs)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-e", "-c", script)
	cmd.Dir = s.dir
	cmd.Env = childEnv(
		"PATH="+s.path,
		"HOME="+filepath.Join(s.dir, "home"),
		"VAULT_ADDR="+v.address(),
		"CI_JOB_JWT="+jobJWT,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{args: []string{"(docs CI job)"}, Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	default:
		t.Fatalf("running the CI snippet: %v", err)
	}
	v.rec.addOutput("ci job", res.Stdout+"\n"+res.Stderr)
	b, err := os.ReadFile(s.curlArgs)
	if err != nil {
		return nil, res
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"), res
}

// testCIJob: the page's JWT role and shell snippet against a real Vault;
// job tokens of another repository, ref or audience, or signed by another
// key, are refused; vault-action's inputs match the role.
func testCIJob(t *testing.T, v *vaultServer, em *emulator) {
	signer := newJWTSigner(t)
	role := configureJWT(t, v, signer)
	aud := role.BoundAudiences[0]
	repo, ref := role.BoundClaims["repository"], role.BoundClaims["ref"]
	script := docBlock(t, consumersPage, "ci-job.sh")
	require.Contains(t, script, "role="+ciRoleName)
	require.Contains(t, script, mountPath+"/token/"+consumerName)
	sh := newCIShell(t, v)

	// The job of the bound repository and ref, for the bound audience.
	args, res := sh.run(t, v, script, signer.sign(t, githubJobClaims(aud, repo, ref)))
	require.Zero(t, res.ExitCode, "the page's CI job failed: %s", res)
	require.NotNil(t, args, "the CI job never called curl: %s", res)
	require.Len(t, args, 3, "curl's arguments: %q", args)
	require.Equal(t, "-H", args[0])
	bearer, ok := strings.CutPrefix(args[1], "Authorization: Bearer ")
	require.True(t, ok, "curl's header is %q", args[1])
	requireLive(t, em, bearer, "the token the CI job sent to IRIS")
	_, shared := v.readToken(t, consumerName)
	require.Equal(t, shared.accessToken(), bearer, "the CI job did not send the shared token")

	// The login's token has the CI policy and the default policy only.
	var login struct {
		Auth struct {
			ClientToken string   `json:"client_token"`
			Policies    []string `json:"policies"`
		} `json:"auth"`
	}
	v.cliJSON(t, &login, "write", "-format=json", "auth/jwt/login", "role="+ciRoleName, "jwt="+signer.sign(t, githubJobClaims(aud, repo, ref)))
	require.ElementsMatch(t, []string{"default", policyCI}, login.Auth.Policies)
	v.checkRefusals(t, login.Auth.ClientToken, []refusal{
		{"another name's token", "GET", mountPath + "/token/" + otherName, nil},
		{"creds/", "GET", mountPath + "/creds/" + consumerName, nil},
		{"read config/", "GET", mountPath + "/config/" + consumerName, nil},
		{"list config/", "LIST", mountPath + "/config/", nil},
	})

	// Job tokens Vault must refuse: the snippet stops before curl.
	other := newJWTSigner(t)
	for _, c := range []struct {
		what string
		jwt  string
	}{
		{"another repository", signer.sign(t, githubJobClaims(aud, repo+"-fork", ref))},
		{"another ref", signer.sign(t, githubJobClaims(aud, repo, "refs/heads/feature"))},
		{"another audience", signer.sign(t, githubJobClaims("https://other.example.com", repo, ref))},
		{"another signing key", other.sign(t, githubJobClaims(aud, repo, ref))},
		{"expired", signer.sign(t, func() map[string]any {
			c := githubJobClaims(aud, repo, ref)
			c["iat"], c["nbf"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			return c
		}())},
	} {
		args, res := sh.run(t, v, script, c.jwt)
		require.NotZero(t, res.ExitCode, "the CI job succeeded with a job token of %s: %s", c.what, res)
		require.Nil(t, args, "the CI job called curl with a job token of %s", c.what)
		login := v.cliFails(t, "write", "auth/jwt/login", "role="+ciRoleName, "jwt="+c.jwt)
		require.Contains(t, login.Stderr, "Code: 400", "login with a job token of %s", c.what)
	}

	// hashicorp/vault-action logs in to the same role, with a job token for
	// the role's audience, and reads the same token.
	action := docBlock(t, consumersPage, "vault-action.yml")
	for _, want := range []string{
		"uses: hashicorp/vault-action@",
		"method: jwt",
		"role: " + ciRoleName,
		"jwtGithubAudience: " + aud,
		"iris/token/" + consumerName + " access_token | IRIS_TOKEN",
		"id-token: write",
	} {
		require.Contains(t, action, want, "the page's vault-action step")
	}
}

# vault-plugin-secrets-iris
#
# make dev    build everything and run a real Vault with the plugin, against
#             the local IRIS emulator, until Ctrl-C
# make test   unit tests, then end-to-end tests against a real Vault
# make bench  Go benchmarks and a load run against a real Vault
# make release VERSION=vX.Y.Z
#             release binaries for every platform and SHA256SUMS in dist/
# make test-compat VAULT_VERSION=vX.Y.Z
#             the end-to-end tests against another Vault release
# make test-compat OPENBAO_SRC=DIR
#             the end-to-end tests against OpenBao, built from a source
#             checkout in DIR

GO        ?= go
# The VERSION file is the one place the version lives; a plain go build
# embeds it too (version.go).
VERSION   ?= $(shell cat VERSION)
PLUGIN    := vault-plugin-secrets-iris
BIN_DIR   := bin
LDFLAGS   := -s -w -X vault-plugin-secrets-iris.Version=$(VERSION)

# Vault is built from the released module in tools/vault, cached outside the
# work tree (see scripts/build-vault.sh) and linked at bin/vault; point
# VAULT_BIN at a Vault you already have to skip the build.
DEFAULT_VAULT_BIN := $(CURDIR)/$(BIN_DIR)/vault
VAULT_BIN ?= $(DEFAULT_VAULT_BIN)
ifeq ($(VAULT_BIN),$(DEFAULT_VAULT_BIN))
VAULT_DEP := $(BIN_DIR)/vault
endif

# The plugin's inputs: everything but the tools module and the e2e tests, so
# that editing a test does not rebuild the binaries.
GO_SOURCES := $(shell find . -name '*.go' -not -path './tools/*' -not -path './bin/*' -not -path './e2e/*') go.mod go.sum VERSION

.PHONY: all build vault prometheus test test-unit test-e2e test-compat dev bench release fmt lint clean

all: build

build: $(BIN_DIR)/$(PLUGIN) $(BIN_DIR)/iris-emulator

$(BIN_DIR)/$(PLUGIN): $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/$(PLUGIN)

$(BIN_DIR)/iris-emulator: $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/iris-emulator

# The end-to-end tests run a race-enabled plugin inside Vault, so that data
# races in the real serving path fail the tests too.
$(BIN_DIR)/e2e/$(PLUGIN): $(GO_SOURCES)
	$(GO) build -race -trimpath -ldflags "-X vault-plugin-secrets-iris.Version=$(VERSION)" -o $@ ./cmd/$(PLUGIN)

# Release binaries: static, without local paths, the version stamped in.
# DIST_DIR may point elsewhere (the end-to-end release test builds into a
# temporary directory).
DIST_DIR  ?= dist
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64

release:
	@case "$(VERSION)" in v[0-9]*.[0-9]*.[0-9]*) ;; *) echo "VERSION=$(VERSION) is not vX.Y.Z" >&2; exit 1;; esac
	rm -rf $(DIST_DIR)
	mkdir -p $(DIST_DIR)
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		out=$(DIST_DIR)/$(PLUGIN)_$(VERSION)_$${os}_$${arch}$$ext; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/$(PLUGIN); \
	done
	cd $(DIST_DIR) && if command -v sha256sum >/dev/null; then sha256sum $(PLUGIN)_*; else shasum -a 256 $(PLUGIN)_*; fi > SHA256SUMS
	@cat $(DIST_DIR)/SHA256SUMS

vault: $(VAULT_DEP)

$(BIN_DIR)/vault: tools/vault/go.mod tools/vault/go.sum tools/vault/main.go scripts/build-vault.sh
	./scripts/build-vault.sh $@

test: test-unit test-e2e

# The monitoring tests (promtool rule tests, the e2e test against a real
# Prometheus) need Debian's prometheus package; the script installs it when
# missing, and IRIS_REQUIRE_PROMTOOL keeps those tests from skipping here.
prometheus:
	./scripts/install-prometheus.sh

# The end-to-end suite against another Vault release, built like the pinned
# one from the module proxy (scripts/build-vault.sh generates its tools
# module and prints the sdk and api releases it pairs it with), or against
# OpenBao built from a source checkout (scripts/build-openbao.sh); not part
# of make test. VAULT_SDK_VERSION overrides the sdk release.
test-compat:
ifneq ($(OPENBAO_SRC),)
	OPENBAO_SRC=$(OPENBAO_SRC) ./scripts/build-openbao.sh $(BIN_DIR)/bao
	$(MAKE) test-e2e VAULT_BIN=$(CURDIR)/$(BIN_DIR)/bao
else
	@test -n "$(VAULT_VERSION)" || { echo "usage: make test-compat VAULT_VERSION=vX.Y.Z, or OPENBAO_SRC=DIR" >&2; exit 1; }
	VAULT_VERSION=$(VAULT_VERSION) VAULT_SDK_VERSION=$(VAULT_SDK_VERSION) ./scripts/build-vault.sh $(BIN_DIR)/vault-$(VAULT_VERSION)
	$(MAKE) test-e2e VAULT_BIN=$(CURDIR)/$(BIN_DIR)/vault-$(VAULT_VERSION)
endif

test-unit: prometheus
	IRIS_REQUIRE_PROMTOOL=1 $(GO) test -race -count=1 ./...

# E2E_FLAGS adds go test flags (-v lists every test and why it was skipped).
test-e2e: $(VAULT_DEP) $(BIN_DIR)/e2e/$(PLUGIN) prometheus
	IRIS_REQUIRE_PROMTOOL=1 VAULT_BIN=$(VAULT_BIN) IRIS_PLUGIN_BIN=$(CURDIR)/$(BIN_DIR)/e2e/$(PLUGIN) IRIS_PLUGIN_VERSION=$(VERSION) \
		$(GO) test -race -count=1 -timeout 45m -tags e2e $(E2E_FLAGS) ./e2e/...

dev: build $(VAULT_DEP)
	VAULT_BIN=$(VAULT_BIN) PLUGIN_BIN=$(CURDIR)/$(BIN_DIR)/$(PLUGIN) EMULATOR_BIN=$(CURDIR)/$(BIN_DIR)/iris-emulator \
		PLUGIN_VERSION=$(VERSION) ./scripts/dev.sh

# The load run (e2e/load_test.go) and the scale run (e2e/scale_test.go: 1,
# 1,000 and 10,000 API users on one mount, about 11 minutes), both skipped
# unless IRIS_LOAD=1, use the plain, non-race plugin; the load run also a
# no-op plugin built only for it as the floor that any external plugin costs.
bench: $(VAULT_DEP) build $(BIN_DIR)/noop-plugin
	$(GO) test -run '^$$' -bench . -benchmem -count=1 .
	IRIS_LOAD=1 VAULT_BIN=$(VAULT_BIN) IRIS_PLUGIN_BIN=$(CURDIR)/$(BIN_DIR)/$(PLUGIN) IRIS_PLUGIN_VERSION=$(VERSION) \
		NOOP_PLUGIN_BIN=$(CURDIR)/$(BIN_DIR)/noop-plugin \
		$(GO) test -count=1 -timeout 30m -tags e2e -run '^(TestLoad|TestScale)$$' -v ./e2e/...

$(BIN_DIR)/noop-plugin: $(wildcard e2e/noop-plugin/*.go) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./e2e/noop-plugin

fmt:
	gofmt -w $$(find . -name '*.go' -not -path './bin/*')

# staticcheck is built from tools/staticcheck (see scripts/build-staticcheck.sh)
# and run with its default checks: the bug-finding SA set, simplifications and
# the style checks that do not second-guess naming.
$(BIN_DIR)/staticcheck: tools/staticcheck/go.mod tools/staticcheck/go.sum scripts/build-staticcheck.sh
	./scripts/build-staticcheck.sh $@

lint: $(BIN_DIR)/staticcheck
	@test -z "$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*'))" || (gofmt -l . ; echo "gofmt needed"; exit 1)
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	GOOS=darwin $(GO) vet ./...
	GOOS=darwin $(GO) vet -tags e2e ./e2e/...
	$(BIN_DIR)/staticcheck ./...
	$(BIN_DIR)/staticcheck -tags e2e ./e2e/...

clean:
	rm -rf $(BIN_DIR)/$(PLUGIN) $(BIN_DIR)/iris-emulator $(BIN_DIR)/noop-plugin $(BIN_DIR)/e2e

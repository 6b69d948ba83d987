# Cluster path: the kind e2e (ci/e2e-setup.sh --provider kind + tests/cluster, docs/cluster.md) and the linters
# its tests run.
ACTIONLINT_VERSION := v1.7.12
KIND_VERSION := $(shell sed -n 's/^KIND_VERSION=//p' ci/e2e-setup.sh)
E2E_TOOLS_DIR := $(CURDIR)/.tools
ACTIONLINT_STAMP := $(E2E_TOOLS_DIR)/.actionlint-$(ACTIONLINT_VERSION)
KIND_STAMP := $(E2E_TOOLS_DIR)/.kind-$(KIND_VERSION)
# apt-get needs root: CI machines here run as root, GitHub's runners through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: e2e e2e-tools

TEST_DEPS += e2e-tools

e2e: venv ## the whole chart on a throwaway kind cluster (needs Docker and the internet)
	ci/e2e-setup.sh up --provider kind
	$(MAKE) --no-print-directory e2e-test E2E_PROVIDER=kind; rc=$$?; ci/e2e-setup.sh down --provider kind; exit $$rc

e2e-tools: $(ACTIONLINT_STAMP) $(KIND_STAMP) ## shellcheck (Debian), actionlint and kind (pinned Go modules)
	@command -v shellcheck >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq shellcheck >/dev/null; }
	@shellcheck --version | sed -n 's/^version: /shellcheck /p'

$(ACTIONLINT_STAMP):
	GOBIN=$(E2E_TOOLS_DIR)/bin go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	$(E2E_TOOLS_DIR)/bin/actionlint -version | grep -qx '$(ACTIONLINT_VERSION)'
	rm -f $(E2E_TOOLS_DIR)/.actionlint-*
	touch $@

# The kind the e2e pins (its tests check every kind command line against it).
$(KIND_STAMP):
	GOBIN=$(E2E_TOOLS_DIR)/bin go install sigs.k8s.io/kind@$(KIND_VERSION)
	$(E2E_TOOLS_DIR)/bin/kind version | grep -q ' $(KIND_VERSION) '
	rm -f $(E2E_TOOLS_DIR)/.kind-*
	touch $@

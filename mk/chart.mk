# Helm chart: pinned tools in .tools/ and the chart tests (see docs/chart.md).
TOOLS_DIR := $(CURDIR)/.tools
HELM := $(TOOLS_DIR)/bin/helm
export HELM_PLUGINS := $(TOOLS_DIR)/helm-plugins

.PHONY: tools chart-test chart-docs ct-lint

TEST_DEPS += tools

tools: ## install pinned helm, kubectl and the helm-unittest plugin into .tools/
	@$(PY) tests/chart/install_tools.py --dir $(TOOLS_DIR)

chart-test: venv tools ## helm-unittest, lint, schema + CRD validation, CLI contract
	$(BIN)/pytest tests/chart

ct-lint: venv tools ## chart-testing's ct lint (ci/ct/ct.yaml): version bump vs main, Chart.yaml schema, yamllint, helm lint per ci/ values
	$(BIN)/python tests/chart/ct_lint.py

chart-docs: tools ## regenerate charts/housing-mlops/README.md with helm-docs (README.md.gotmpl + values.yaml)
	$(TOOLS_DIR)/bin/helm-docs --chart-search-root charts --chart-to-generate charts/housing-mlops --sort-values-order file --ignore-non-descriptions

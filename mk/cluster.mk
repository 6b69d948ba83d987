# The local cluster provider (ci/cluster/, docs/cluster.md): upstream Kubernetes built from the Go module proxy,
# run as host processes with Debian's containerd. Needs root. Pins: ci/cluster/pins.env.
.PHONY: cluster-build cluster-up cluster-down cluster-status e2e-local e2e-setup e2e-test e2e-down e2e-plan

cluster-build: ## build the local cluster's binaries (cached in ~/.cache/housing-mlops/cluster)
	ci/cluster/build.sh

cluster-up: tools ## start the local single-node Kubernetes (KUBECONFIG: `ci/cluster/cluster.sh kubeconfig`)
	ci/cluster/cluster.sh up

cluster-down: ## stop the local cluster and undo its host changes
	ci/cluster/cluster.sh down

cluster-status: ## what of the local cluster runs
	ci/cluster/cluster.sh status

# The cluster e2e: provisioning in bash (ci/e2e-setup.sh), the scenarios in pytest (tests/cluster/).
E2E_PROVIDER ?= local
# -k NAME: one scenario (and the steps it needs) on a cluster that is up; --collect-only: the plan.
E2E_ARGS ?=
E2E_PYTEST = $(BIN)/pytest tests/cluster --provider $(E2E_PROVIDER) -v -ra --capture=tee-sys -o timeout=1800 $(E2E_ARGS)

e2e-local: venv ## the whole chart on the local cluster: setup, every scenario, teardown (root, no registry needed)
	ci/e2e-setup.sh up --provider local
	$(MAKE) --no-print-directory e2e-test E2E_PROVIDER=local; rc=$$?; ci/e2e-setup.sh down --provider local; exit $$rc

e2e-setup: venv ## bring up the cluster, KServe, S3, images (and the signed registry, local) for the scenarios
	ci/e2e-setup.sh up --provider $(E2E_PROVIDER)

e2e-test: venv ## run the scenarios on the cluster e2e-setup brought up (E2E_ARGS='-k rollback' for one)
	$(E2E_PYTEST)

e2e-down: ## stop the registry and delete the cluster e2e-setup brought up
	ci/e2e-setup.sh down --provider $(E2E_PROVIDER)

e2e-plan: venv ## what the e2e would run, in order, without a cluster (pytest --collect-only)
	$(BIN)/pytest tests/cluster --provider $(E2E_PROVIDER) --collect-only -q

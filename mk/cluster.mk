# The local cluster provider (ci/cluster/, docs/cluster.md): upstream Kubernetes built from the Go module proxy,
# run as host processes with Debian's containerd. Needs root. Pins: ci/cluster/pins.env.
.PHONY: cluster-build cluster-up cluster-down cluster-status

cluster-build: ## build the local cluster's binaries (cached in ~/.cache/housing-mlops/cluster)
	ci/cluster/build.sh

cluster-up: tools ## start the local single-node Kubernetes (KUBECONFIG: `ci/cluster/cluster.sh kubeconfig`)
	ci/cluster/cluster.sh up

cluster-down: ## stop the local cluster and undo its host changes
	ci/cluster/cluster.sh down

cluster-status: ## what of the local cluster runs
	ci/cluster/cluster.sh status

.PHONY: e2e-local
e2e-local: ## the whole chart on the local cluster (ci/e2e.sh --provider local; root, no registry needed)
	ci/e2e.sh --provider local

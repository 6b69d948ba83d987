"""The cluster e2e's framework: typed Helm and Kubernetes clients, waits, in-pod checks, diagnostics."""

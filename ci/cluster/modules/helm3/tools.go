//go:build tools

// Package tools pins Helm 3 (the e2e installs with Helm 4 and Helm 3).
package tools

import _ "helm.sh/helm/v3/cmd/helm"

//go:build tools

// Package tools pins the local-path provisioner (the cluster's default StorageClass).
package tools

import _ "github.com/rancher/local-path-provisioner"

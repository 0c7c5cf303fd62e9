//go:build tools

// Package tools records the packages that install-tools.sh builds from this
// module, so that `go mod tidy` keeps their dependencies in go.mod and go.sum.
// It is never compiled (the "tools" build tag is never set).
package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/cri-tools/pkg/benchmark"
	_ "sigs.k8s.io/cri-tools/pkg/validate"
)

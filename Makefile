# Tether build entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := all

OUT        := _output
BIN_DIR    := $(OUT)/local/bin
VERSION    ?= $(shell git describe --tags --match 'v*' --dirty 2>/dev/null || echo v0.1.0-dev+$(COMMIT))
COMMIT     ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The commit date, not now: a changing date would relink every binary on every make.
BUILD_DATE ?= $(shell git log -1 --format=%cI 2>/dev/null || echo unknown)
LDFLAGS    := -s -w -X github.com/tether-edge/tether/pkg/version.gitVersion=$(VERSION) \
              -X github.com/tether-edge/tether/pkg/version.gitCommit=$(COMMIT) \
              -X github.com/tether-edge/tether/pkg/version.buildDate=$(BUILD_DATE)
BINARIES   := cloudcore edgecore keadm
GO_TEST_FLAGS ?=

.PHONY: all
all: $(BINARIES) ## Build cloudcore, edgecore and keadm into _output/local/bin

.PHONY: $(BINARIES)
$(BINARIES):
	@mkdir -p $(BIN_DIR)
	go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/$@ ./cmd/$@

.PHONY: demo
demo: ## Build the counter demo's web-controller-app and counter-mapper into _output/local/bin
	@mkdir -p $(BIN_DIR)
	go build -trimpath -o $(BIN_DIR)/web-controller-app ./examples/counter-demo/web-controller-app
	go build -trimpath -o $(BIN_DIR)/counter-mapper ./examples/counter-demo/counter-mapper

.PHONY: deps
deps: ## Install the Debian packages tests and local runs need (only what is missing)
	hack/install-deps.sh

.PHONY: tools
tools: ## Build kube-apiserver, etcd, kubectl, kube-controller-manager, kube-scheduler, controller-gen (cached in _output/tools)
	hack/build-tools.sh

.PHONY: images
images: ## Build the pause and testapp images into _output/images (cached; hack/build-images.sh --import SOCK loads them)
	hack/build-images.sh

.PHONY: generate
generate: ## Regenerate deepcopy code and CRD manifests from pkg/apis
	hack/update-codegen.sh

.PHONY: verify
verify: ## gofmt, go vet, generated files up to date
	hack/verify.sh

.PHONY: test-unit
test-unit: ## Unit tests with the race detector
	go test -race -count=1 $(GO_TEST_FLAGS) ./...

.PHONY: test-integration
test-integration: tools images ## Integration and browser tests against a real kube-apiserver, etcd, containerd, mosquitto, Chromium
	go test -race -count=1 -timeout 40m -tags integration $(GO_TEST_FLAGS) ./tests/... ./examples/...

.PHONY: chaos
chaos: tools images ## Chaos scenarios on the real binaries as keadm installs them (not part of make test)
	go test -race -count=1 -tags chaos -timeout 20m $(GO_TEST_FLAGS) ./tests/chaos/...

.PHONY: crossbuild release test-cross
crossbuild: deps ## Static cgo builds for linux/amd64, arm64, arm (GOARM=7) into _output/cross (ARCHES="arm64" for fewer)
	hack/crossbuild.sh $(ARCHES)
release: deps ## Reproducible release tarballs and SHA256SUMS in _output/release
	hack/release.sh $(ARCHES)
test-cross: deps ## Run the arm64 edgecore and keadm under qemu-user (a cold arm64 build takes ~8 minutes)
	hack/crossbuild.sh arm64
	go test -count=1 -tags integration,crossbuild -run TestCrossBuiltBinariesRun ./tests/integration/

.PHONY: perf
perf: tools images ## Scripted measurements (pod start-up, edgecore footprint, reboot recovery, device latency); numbers in _output/perf
	go test -tags perf -count=1 -v -timeout 30m ./tests/perf/

.PHONY: test
test: deps tools verify test-unit test-integration ## Everything CI runs: installs what is missing, then all tests

.PHONY: cluster-up cluster-down
cluster-up: deps tools ## Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler on loopback
	hack/local-cluster.sh up
cluster-down: ## Stop the local control plane
	hack/local-cluster.sh down

.PHONY: local-up local-down
local-up: deps tools all demo ## Run the whole system and the counter demo on this machine (Ctrl-C stops it)
	hack/local-up.sh
local-down: ## Stop everything local-up started
	hack/local-up.sh down

.PHONY: clean
clean: ## Remove built binaries (keeps the cached control-plane tools)
	rm -rf $(OUT)/local

.PHONY: help
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# kube-clusterip: the Kubernetes ClusterIP Service stack as one controller-runtime manager.
# Kubebuilder (go/v4) layout, maintained by hand: the kubebuilder CLI is not on the Go module proxy.

IMG ?= kube-clusterip:dev
# What deploy and build-installer render: config/default (failurePolicy Ignore),
# config/webhook-fail-closed (failurePolicy Fail, kube-system and the kubernetes Service exempt),
# or config/cert-manager (the webhook's certificate from cert-manager).
INSTALL ?= config/default
# Version stamped into the binary (kube-clusterip --version): the git description by default.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS ?= -X main.version=$(VERSION)
# Container tool and platforms for docker-buildx.
CONTAINER_TOOL ?= docker
PLATFORMS ?= linux/amd64,linux/arm64
# Where build-installer writes install.yaml.
DIST ?= dist
# Fuzz time per fuzz target in `make test` (CI bound); longer runs: make fuzz FUZZTIME=10m.
FUZZTIME ?= 20s
# Go test flags, e.g. GOTESTFLAGS='-run TestRange -v'.
GOTESTFLAGS ?=
# Per test binary. go test's default of 10 minutes is less than the reliability suite takes on a
# busy 2-core machine (about 5 minutes idle, over 10 with two busy loops beside a build).
TESTTIMEOUT ?= 40m

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT_VERSION ?= v2.15.0
# golangci-lint takes minutes to build on two cores: it is built once per machine into a cache
# outside the checkout (as hack/envtest-assets.sh caches the control plane), so that a fresh
# clone (CI) links it instead of building it again.
TOOLS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kube-clusterip/tools

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs, RBAC roles and webhook configurations into config/.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) webhook paths="./controllers/..." output:webhook:artifacts:config=config/webhook
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths="./controllers/ipam/...;./controllers/endpoints/..." output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=datapath-role paths="./controllers/nodeagent/..." output:rbac:artifacts:config=config/datapath

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods (zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet, on the e2e specs too (build tag e2e), and check the shell scripts' syntax.
	go vet ./...
	go vet -tags e2e ./test/e2e/
	@for f in hack/*.sh hack/e2e/*.sh .ci/run; do bash -n "$$f" || exit 1; done

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (import direction enforced by depguard).
	$(GOLANGCI_LINT) run

.PHONY: verify
verify: manifests generate vet ## Fail when generated files are stale, gofmt or go vet complain.
	@stale=$$(git status --porcelain -- config api '*zz_generated*'); \
	  if [ -n "$$stale" ]; then echo "generated files are stale, run 'make manifests generate' and commit:"; echo "$$stale"; git diff --stat; exit 1; fi
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi

.PHONY: envtest
envtest: ## Build kube-apiserver and etcd offline (cached) and print KUBEBUILDER_ASSETS.
	@hack/envtest-assets.sh

.PHONY: test
test: manifests generate kustomize ## Run every test: unit, envtest suites, datapath (root, netns) and bounded fuzzing.
	@assets=$$(hack/envtest-assets.sh); \
	  KUBEBUILDER_ASSETS=$$assets go test -timeout $(TESTTIMEOUT) ./... $(GOTESTFLAGS)
	@$(MAKE) --no-print-directory fuzz

.PHONY: test-upstream-diff
test-upstream-diff: ## Ours beside kube-controller-manager and kube-proxy v1.37.2: the same scenarios, objects compared, packets played (root for the packets).
	@assets=$$(hack/envtest-assets.sh); upstream=$$(hack/upstream-assets.sh); \
	  KUBEBUILDER_ASSETS=$$assets UPSTREAM_ASSETS=$$upstream go test -tags upstreamdiff ./test/upstreamdiff ./datapath \
	    -run 'TestSameObjectsAsKubeControllerManager|TestTakingOverFromKubeControllerManager|TestSameServicesAsKubeAPIServer|WithKubeProxy|TestReplacingKubeProxy' -count=1 -timeout 15m -v $(GOTESTFLAGS)

.PHONY: test-reliability
test-reliability: ## Run the reliability suite (manager killed and restarted, API server restarted, bad input; issue 12).
	@assets=$$(hack/envtest-assets.sh); \
	  KUBEBUILDER_ASSETS=$$assets go test ./test/reliability/... -timeout 30m $(GOTESTFLAGS)

.PHONY: test-e2e
test-e2e: manifests kustomize ## Install on a real node (kubelet, containerd, no kube-proxy) in private namespaces and run test/e2e (root).
	@hack/test-e2e.sh $(E2EFLAGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 20s).
	@hack/fuzz.sh $(FUZZTIME)

##@ Build

.PHONY: build
build: manifests generate ## Build the manager binary into bin/.
	go build -ldflags "$(LDFLAGS)" -o bin/kube-clusterip .

.PHONY: run
run: manifests generate ## Run the manager against the current kubeconfig.
	go run . $(ARGS)

.PHONY: demo
demo: build ## The whole stack on one machine with real packets (root; KEEP=1 leaves it running).
	@go build -o bin/demo ./hack/demo
	@assets=$$(if [ "$$(id -u)" = 0 ]; then hack/envtest-assets.sh; fi); \
	  KUBEBUILDER_ASSETS=$$assets bin/demo --manager bin/kube-clusterip $(if $(KEEP),--keep)

.PHONY: bench
bench: ## Run every benchmark (root for the datapath ones); medians vs targets, JSON in bench/results/.
	@assets=$$(hack/envtest-assets.sh); \
	  KUBEBUILDER_ASSETS=$$assets go run ./hack/bench $(BENCHFLAGS)

.PHONY: bench-compare
bench-compare: ## Endpoints, datapath and network programming workloads vs upstream kube-controller-manager and kube-proxy, with the floors (root; private netns).
	@assets=$$(hack/envtest-assets.sh); upstream=$$(hack/upstream-assets.sh); \
	  go build -o bin/bench-compare ./hack/bench-compare; \
	  KUBEBUILDER_ASSETS=$$assets bin/bench-compare --upstream $$upstream $(COMPAREFLAGS)

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRDs from the cluster.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy INSTALL (config/default unless set) to the cluster of the current kubeconfig; IMG sets the image.
	$(call render-install) | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove everything deploy created.
	$(KUSTOMIZE) build $(INSTALL) | kubectl delete --ignore-not-found -f -

.PHONY: build-installer
build-installer: manifests kustomize ## Write one install YAML to $(DIST)/install.yaml (IMG sets the image).
	mkdir -p $(DIST)
	$(call render-install) > $(DIST)/install.yaml
	@echo "wrote $(DIST)/install.yaml with image $(IMG)"

.PHONY: docker-build
docker-build: ## Build the image (one image for the control loops and the node agent).
	$(CONTAINER_TOOL) build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image IMG to its registry.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: docker-buildx
docker-buildx: ## Build and push the image for PLATFORMS (cross-compiled, no emulation for the Go build).
	- $(CONTAINER_TOOL) buildx create --name kube-clusterip-builder
	$(CONTAINER_TOOL) buildx use kube-clusterip-builder
	$(CONTAINER_TOOL) buildx build --push --platform=$(PLATFORMS) --build-arg VERSION=$(VERSION) -t $(IMG) .
	- $(CONTAINER_TOOL) buildx rm kube-clusterip-builder

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

.PHONY: controller-gen kustomize golangci-lint
controller-gen: $(CONTROLLER_GEN)-$(CONTROLLER_TOOLS_VERSION) ## Install controller-gen into bin/.
kustomize: $(KUSTOMIZE)-$(KUSTOMIZE_VERSION) ## Install kustomize into bin/.
golangci-lint: $(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION) ## Install golangci-lint into bin/.

$(CONTROLLER_GEN)-$(CONTROLLER_TOOLS_VERSION): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))
$(KUSTOMIZE)-$(KUSTOMIZE_VERSION): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))
$(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION): | $(LOCALBIN)
	@[ -x "$(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)" ] || { \
	  set -e; echo "Building golangci-lint $(GOLANGCI_LINT_VERSION) into $(TOOLS_CACHE) (once per machine)"; \
	  mkdir -p "$(TOOLS_CACHE)/gobin"; \
	  GOBIN="$(TOOLS_CACHE)/gobin" go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	  mv "$(TOOLS_CACHE)/gobin/golangci-lint" "$(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)"; \
	}
	@ln -sf "$(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)" $(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION)
	@ln -sf $$(basename $(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION)) $(GOLANGCI_LINT)

# go-install-tool installs package $2@$3 as $1-$3 and links $1 to it, so that a version bump
# in this file installs the new version.
define go-install-tool
@[ -f "$(1)-$(3)" ] || { \
set -e; \
echo "Installing $(2)@$(3)"; \
rm -f $(1) || true; \
GOBIN=$(LOCALBIN) go install $(2)@$(3); \
mv $(1) $(1)-$(3); \
}; \
ln -sf $$(basename $(1)-$(3)) $(1)
endef

# render-install builds $(INSTALL) with the image set to $(IMG), through an overlay in
# bin/ so that the checked-in kustomization stays as it is.
define render-install
mkdir -p $(LOCALBIN)/install-overlay; \
printf 'resources:\n- ../../$(INSTALL)\n' > $(LOCALBIN)/install-overlay/kustomization.yaml; \
(cd $(LOCALBIN)/install-overlay && $(KUSTOMIZE) edit set image kube-clusterip=$(IMG)); \
$(KUSTOMIZE) build $(LOCALBIN)/install-overlay
endef

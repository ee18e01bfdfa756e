# PeerLVS build, test and lab entry points. `make test` is what CI runs: it
# installs the lab's Debian packages itself (deploy/lab/setup.sh), so it works
# on a fresh machine.

GO        ?= go
export PATH := $(PATH):/usr/local/go/bin
STATICCHECK_VERSION ?= v0.8.2
# nfpm builds the .deb (make deb). v2.45.1 is the newest release whose
# dependencies all come from the Go module proxy (v2.46+ need
# go.digitalxero.dev modules the proxy refuses) and it builds with our Go.
NFPM_VERSION ?= v2.45.1
# Packages whose tests boot the qemu lab; they run one at a time because each
# boot wants both cores.
LAB_PKGS   = ./deploy/lab/...
UNIT_PKGS  = $(shell $(GO) list ./... | grep -v /deploy/lab)
TEST_FLAGS ?= -count=1

.PHONY: all build test unit lab lab-setup bench bench-takeover lint demo clean deb chaos

all: build

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ $$($(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./cmd/... ./deploy/lab/cmd/...)

test: lab-setup unit lab

# Unit tests, fuzz seed corpora, and the nftables tests that run on this
# machine's kernel inside throwaway network namespaces.
unit:
	$(GO) test $(TEST_FLAGS) -timeout 15m $(UNIT_PKGS)

# Lab scenarios: each boots the IPVS kernel under qemu. -v shows the guest
# kernel each scenario ran on and the figures it measured.
lab: lab-setup
	$(GO) test $(TEST_FLAGS) -p 1 -v -timeout 25m $(LAB_PKGS)

# One line per step it runs (none when all is in place); apt-get's and
# dpkg's output goes to .cache/lab/setup.log, shown only if a step fails.
lab-setup:
	@deploy/lab/setup.sh >/dev/null

# Go benchmarks, then the lab benchmark (stock master->backup against syncd
# at the same offered load). Results and commands: docs/benchmarks.md.
bench: lab-setup
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(UNIT_PKGS)
	PEERLVS_LAB_BENCH=1 $(GO) test -count=1 -p 1 -v -timeout 20m -run 'TestBenchSyncLoad' ./deploy/lab/scenarios/
	$(MAKE) bench-takeover

# The failover benchmark on the host (needs root, about 20 minutes): saru
# fleets of 3, 8 and 32 in network namespaces, 20 kill -9 each, takeover
# p50/p99; then 10 minutes of a fleet of 8 on one CPU with 30 % of it
# stolen, counting live directors declared dead. Writes
# .cache/bench/takeover.csv and its plot .cache/bench/takeover.svg.
# PEERLVS_BENCH_SIZES, _KILLS, _FP_SIZE, _FP_DURATION override.
bench-takeover:
	@mkdir -p .cache/bench
	PEERLVS_BENCH_TAKEOVER=1 PEERLVS_BENCH_CSV=$(CURDIR)/.cache/bench/takeover.csv $(GO) test -count=1 -v -timeout 60m -run 'TestSaruTakeoverBench$$' ./cmd/saru/
	$(GO) run ./deploy/bench/plottakeover -in .cache/bench/takeover.csv -out .cache/bench/takeover.svg

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# The chaos soak (needs root): TestSaruChaos, which `make unit` runs for
# 90 s, for 10 minutes (PEERLVS_CHAOS_DURATION overrides): real saru fleets
# of 3 and 5 directors in network namespaces under random gossip loss,
# one-way and asymmetric partitions, bursts, SIGSTOP, CPU starvation and
# kill -9, while every director's rules are read from its kernel. It prints
# its seed; `make chaos PEERLVS_CHAOS_SEED=<seed>` replays the schedule.
# Figures: docs/benchmarks.md.
chaos:
	PEERLVS_CHAOS_DURATION=$${PEERLVS_CHAOS_DURATION:-10m} $(GO) test -count=1 -v -timeout 20m -run 'TestSaruChaos$$' ./cmd/saru/

# The main job: the lab demo. It boots the lab twice: a pair of directors
# failing over and back with real keepalived (VRRP + lvs_sync_daemon),
# keepalived's VRRP with syncd, the saru pair and the scripted kernel
# threads (side by side), and the three-director active-active fleet
# (saru + syncd) through six events, with a live view of the events; each
# ends with its table.
demo: lab-setup
	PEERLVS_LAB_LIVE=1 $(GO) test -count=1 -p 1 -v -timeout 20m -run 'TestFailover$$|TestFleet$$' ./deploy/lab/scenarios/

# Debian package bin/peerlvs_<version>_<arch>.deb: static saru and syncd in
# /usr/sbin, the units, example configs under /etc/peerlvs (conffiles) and
# the docs; see deploy/deb/nfpm.yaml. Check with dpkg-deb -I / -c.
DEB_VERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//;s/-/+/g' | grep . || echo 0.0.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
DEB_ARCH    ?= $(shell $(GO) env GOARCH)
deb:
	@mkdir -p bin/deb
	CGO_ENABLED=0 GOARCH=$(DEB_ARCH) $(GO) build -trimpath -ldflags '-s -w -X main.version=$(DEB_VERSION)' -o bin/deb/ ./cmd/saru ./cmd/syncd
	PEERLVS_VERSION='$(DEB_VERSION)' PEERLVS_ARCH='$(DEB_ARCH)' $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) \
		package --config deploy/deb/nfpm.yaml --packager deb --target bin/

clean:
	rm -rf bin .cache/lab/runs .cache/lab/build

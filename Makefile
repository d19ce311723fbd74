# shoal — see README.md.
GO       ?= go
BIN      := bin/shoal
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/shoal-dev/shoal/internal/server.Version=$(VERSION)
NODES    ?= 3
MODE     ?= local
# The seeded admin's password in the local cluster of 'make run'.
ADMIN_PASSWORD ?= shoal-admin

.PHONY: all build test test-loaded test-long lint run bench bench-full chaos fuzz clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shoal

# go vet, and gofmt must have nothing to say.
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# The whole suite, with the race detector; then the scale test (32
# in-process nodes on the in-memory network, cluster/scale_test.go) in a go
# test of its own, without -race: the race detector multiplies each node's
# CPU 3-5 times, and 32 nodes in one process on 2 loaded cores then wait
# longer for the CPU than the failure detector's timeouts (scaleSizes there
# has the figures); under -race it skips itself.
test: lint
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -count=1 -timeout 10m -run '^TestScaleConvergesAndHolds$$' ./cluster

# 'make test' while a busy loop per core saturates the machine; prints the
# wall time.
test-loaded:
	scripts/test-under-load $(MAKE) test

# The long profile: the tests that repeat a fault many times (50 SIGKILLs of
# a node under writes, ...) and 32 and 64 in-process nodes held idle
# (without -race: the race detector's CPU cost starves them on 2 cores,
# cluster/scale_test.go); minutes, not part of 'make test'.
test-long: lint
	SHOAL_LONG=1 $(GO) test -race -count=1 -timeout 60m -run 'TestKillDuringWrites' ./cmd/shoal
	SHOAL_LONG=1 $(GO) test -count=1 -timeout 30m -run 'TestScaleConvergesAndHolds' ./cluster

# A local cluster of $(NODES) nodes on loopback, its database seeded once;
# Ctrl-C stops it.
run: build
	./$(BIN) up -n $(NODES) --cache-mode $(MODE) --data-dir shoal-data --seed --admin-password $(ADMIN_PASSWORD)

# The quick benchmark profile (a few minutes); figures go to BENCHMARKS.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./cluster/...
	./$(BIN) bench detect -n 3 --trials 3
	./$(BIN) bench failover -n 3 --trials 3
	./$(BIN) bench coupling --experiment bench/experiments/quick.yaml --out shoal-data/bench/coupling-quick

bench-full: build
	$(GO) test -run '^$$' -bench . -benchtime 5s -count 3 ./cluster/...
	./$(BIN) bench detect -n 3 --trials 5
	./$(BIN) bench failover -n 3 --trials 5
	./$(BIN) bench failover -n 3 --trials 5 --preset lan
	./$(BIN) bench coupling --experiment bench/experiments/default.yaml --out shoal-data/bench/coupling-full

# The fault-injection consistency checker's long profile (15-30 minutes):
# LOCAL async, LOCAL sync, DISTRIBUTED and NEAR, each on a fresh cluster
# under faults; network partitions when run as root (ip, nft). Exits 1 on
# any violation; figures go to RELIABILITY.md. 'make test' runs the short
# profile (bench/chaos's TestShortProfile).
chaos: build
	./$(BIN) bench chaos --profile long --out shoal-data/chaos-long.json

# Fuzz every decoder, and every HTTP route of a node (FuzzHTTPRoutes), for
# FUZZTIME each; new crashers land in the package's testdata/fuzz, which
# holds the seed corpus. 'make test' runs the routes' short form:
# internal/server's TestHTTPFuzzAllRoutes, up to 3,000 mutations of
# internal/server/testdata/httpfuzz/seeds.jsonl in 30 s.
FUZZTIME ?= 30s
FUZZ_TARGETS := ./cluster/wire:FuzzReadFrame ./cluster:FuzzDecodeBusFrame ./l2cache:FuzzDecodeOp \
	./internal/pktline:FuzzReader ./packcache:FuzzDecodeRequest ./packcache:FuzzChecker ./packcache:FuzzDecodeState \
	./gitfront:FuzzAuthorizationHeader ./gitfront:FuzzGitPath ./gitfront:FuzzPktReader \
	./internal/rest:FuzzDecodeBodies ./cluster/cp/raftlog:FuzzScanSegment ./cluster/cp:FuzzDecodeSnapshot ./dmap:FuzzDecode \
	./internal/server:FuzzHTTPRoutes
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== $$name ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

clean:
	rm -rf bin shoal-data

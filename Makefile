# Everyday commands. The README's two commands work without make.

.PHONY: build test demo fuzz bench jaeger-e2e faults

build:
	go build -o bin/relay ./cmd/relay

# Every test: the relay's module, then the deployment files' module
# (deploy/, which keeps the Kubernetes and Prometheus modules out of the
# relay's; -mod=mod lets its go.sum follow the relay's go.mod).
test:
	go test -race -count=1 ./...
	cd deploy && GOFLAGS=-mod=mod go test -race -count=1 ./...

demo:
	go run ./cmd/relay demo

# The fault-injection suite at full size (docs/RELIABILITY.md). The
# normal test run includes it at its smaller sizes.
faults:
	go test ./faults -count=1 -v -timeout 60m -args -full > faults.log 2>&1; status=$$?; \
	grep -E '^(FIGURES|\s*--- |ok|FAIL)' faults.log; exit $$status

# Short fuzzing runs of every fuzz target.
fuzz:
	go test ./cdc -run '^$$' -fuzz FuzzDecode -fuzztime 30s
	go test ./signature -run '^$$' -fuzz FuzzVerify -fuzztime 30s
	go test ./config -run '^$$' -fuzz FuzzLoad -fuzztime 30s
	go test ./mapper -run '^$$' -fuzz FuzzMap -fuzztime 30s
	go test ./egress -run '^$$' -fuzz FuzzMappedForms -fuzztime 30s
	go test ./egress -run '^$$' -fuzz FuzzZonedForms -fuzztime 30s

# The bench command at full size; see docs/PERFORMANCE.md.
bench:
	go run ./cmd/relaybench

# End to end against a real Jaeger: builds Jaeger $(JAEGER_VERSION) from the
# Go module proxy (in a throwaway module, so its dependencies stay out of
# ours; it takes minutes the first time), then runs the relay binary with
# OTLP pointed at it and finds a delivery's trace through Jaeger's query API.
# Jaeger's module requires klauspost/compress v1.18.1, which its author
# retracted; JAEGER_PINS moves it to the fixed release. The module download
# (some 600 lines of `go: downloading`) goes to a log shown only on failure.
JAEGER_VERSION := v1.75.0
JAEGER_PINS := github.com/klauspost/compress@v1.18.2
JAEGER_BIN ?= $(CURDIR)/bin/jaeger-$(JAEGER_VERSION)

jaeger-e2e: $(JAEGER_BIN)
	JAEGER_BIN=$(JAEGER_BIN) go test -count=1 -v -run 'TestJaegerEndToEnd' ./cmd/relay

$(JAEGER_BIN):
	@mkdir -p $(dir $(JAEGER_BIN))
	@echo "jaeger-e2e: building Jaeger $(JAEGER_VERSION) from the Go module proxy (minutes the first time)"
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && cd "$$dir" && \
	go mod init jaegertool >/dev/null 2>&1 && \
	{ go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@$(JAEGER_VERSION) $(JAEGER_PINS) >get.log 2>&1 || { cat get.log; exit 1; }; } && \
	go build -o $(JAEGER_BIN) github.com/jaegertracing/jaeger/cmd/jaeger

# Everyday commands. The README's two commands work without make.

.PHONY: build test demo fuzz faults

build:
	go build -o bin/relay ./cmd/relay

test:
	go test -race -count=1 ./...

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

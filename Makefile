# Everyday commands. The README's two commands work without make.

.PHONY: build test demo fuzz bench

build:
	go build -o bin/relay ./cmd/relay

test:
	go test -race -count=1 ./...

demo:
	go run ./cmd/relay demo

# Short fuzzing runs of every fuzz target.
fuzz:
	go test ./signature -run '^$$' -fuzz FuzzVerify -fuzztime 30s
	go test ./config -run '^$$' -fuzz FuzzLoad -fuzztime 30s
	go test ./mapper -run '^$$' -fuzz FuzzMap -fuzztime 30s
	go test ./egress -run '^$$' -fuzz FuzzMappedForms -fuzztime 30s

# The bench command at full size; see docs/PERFORMANCE.md.
bench:
	go run ./cmd/relaybench

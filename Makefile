# loopchat: `make run-server` to chat, `make test` to check everything.
# Extra flags go through ARGS, e.g. `make run-server ARGS="--port 5000 --rate 0"`.

CARGO ?= cargo
ARGS ?=
PORT ?= 1234
FUZZ_SECS ?= 60
FUZZ_TARGETS ?= framer command engine websocket nats

.PHONY: build run-server run-client cert capture test soak bench bench-smoke fuzz fuzz-cmin lint fmt diagrams

build:
	$(CARGO) build --release --bins

# The server on 127.0.0.1:1234 with the operator console on this terminal.
run-server:
	$(CARGO) run --release --quiet --bin loopchat-server -- $(ARGS)

# The bundled client, to localhost:1234 unless ARGS says otherwise.
run-client:
	$(CARGO) run --release --quiet --bin loopchat-client -- $(ARGS)

# A self-signed development certificate for localhost (127.0.0.1, ::1) in cert.pem and key.pem
# here, for TLS on the chat port. CA:FALSE, because rustls refuses a CA certificate as the
# server's own, and openssl's -x509 makes one unless told.
cert:
	@if [ -e cert.pem ] || [ -e key.pem ]; then \
		echo "cert.pem or key.pem already exists; remove them to make new ones" >&2; exit 1; \
	fi
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
		-subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
		-addext "basicConstraints=critical,CA:FALSE" \
		-addext "keyUsage=critical,digitalSignature" \
		-addext "extendedKeyUsage=serverAuth" \
		-keyout key.pem -out cert.pem
	@echo
	@echo 'Development certificate in cert.pem, its key in key.pem. Use them with:'
	@echo '  make run-server ARGS="--tls-cert cert.pem --tls-key key.pem"'
	@echo '  make run-client ARGS="--tls --ca cert.pem"'

# Watch the server's packets on the loopback interface (needs tshark; see docs/capture.md).
capture:
	scripts/intercept.sh $(PORT)

# Unit and property tests of the pure core, then black-box tests over real sockets.
test:
	$(CARGO) test --workspace

# The long soak: 1000 clients for 5 minutes through the real server, with loss accounting and
# the server's RSS curve (tests/soak.rs; `make test` runs its 8-second version).
soak:
	SOAK_SECS=300 SOAK_CLIENTS=1000 $(CARGO) test --release --test soak -- --nocapture

# The benchmark: loopchat against a thread-per-client server, a tokio server, a minimal
# broadcaster and nats-server (if installed), each pinned to core 0 with the load generator on
# core 1, with loopchat also measured with WebSocket and TLS clients and as a cluster of one and
# two nodes behind nats-server. About 9 minutes; writes docs/bench/ (tables, JSON, SVG plots).
bench:
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release --quiet -p loopchat-bench --bin bench -- --out docs/bench

# The benchmark's smoke test (CI): every server and workload at small N, asserting only that
# they work. About 30 s of runs.
bench-smoke:
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release --quiet -p loopchat-bench --bin bench -- --quick

# Coverage-guided fuzzing (fuzz/README.md): each target for FUZZ_SECS seconds, on the nightly
# toolchain with cargo-fuzz. Every target runs; the exit status says whether any failed.
# make test replays the corpus kept in fuzz/corpus/ and fuzz/regressions/ on stable.
fuzz:
	cd fuzz && fail=0; for t in $(FUZZ_TARGETS); do \
		cargo +nightly fuzz run -s none $$t -- -max_total_time=$(FUZZ_SECS) -timeout=5 || fail=1; \
	done; exit $$fail

# Shrinks the corpus kept in git after a long run (the engine's and nats' on edges only:
# fuzz/README.md).
fuzz-cmin:
	cd fuzz && cargo +nightly fuzz cmin -s none framer -- -timeout=5
	cd fuzz && cargo +nightly fuzz cmin -s none command -- -timeout=5
	cd fuzz && cargo +nightly fuzz cmin -s none engine -- -timeout=5 -use_counters=0
	cd fuzz && cargo +nightly fuzz cmin -s none websocket -- -timeout=5
	cd fuzz && cargo +nightly fuzz cmin -s none nats -- -timeout=5 -use_counters=0

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The report's diagrams: Graphviz sources in docs/diagrams/, rendered to SVG beside them.
# Needs Graphviz (apt-get install graphviz) and python3.
diagrams:
	python3 docs/diagrams/sequences.py
	for f in docs/diagrams/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done

fmt:
	$(CARGO) fmt --all

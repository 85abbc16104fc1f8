# Commands a contributor types. `just --list` shows them.

# The Postgres the tests and the demo use, unless DATABASE_URL says otherwise.
export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# Where cargo builds (CARGO_TARGET_DIR, or target/ here).
target := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

# Run every test (each gets its own database on DATABASE_URL's server).
test *ARGS:
    cargo test --workspace {{ARGS}}

# Formatting and clippy (with and without OpenTelemetry), as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --features otel -- -D warnings

# The tracing tests with the OpenTelemetry layer (feature otel).
test-otel:
    cargo test --test tracing --features otel

# Format the code.
fmt:
    cargo fmt --all

# Start a throwaway Postgres 15 in Docker on 127.0.0.1:5432 (for laptops).
db-up:
    docker run -d --rm --name sluice-postgres -e POSTGRES_HOST_AUTH_METHOD=trust -p 127.0.0.1:5432:5432 postgres:15-alpine

# Stop the Docker Postgres started by db-up.
db-down:
    docker stop sluice-postgres

# Exactly what CI runs: Postgres up, tests, lints.
ci:
    bash .ci/run

# The demo: publish events and process them.
demo:
    cargo run --example quickstart

# The sluice CLI, e.g. `just sluice migrate status`.
sluice *ARGS:
    cargo run -q -p sluice-cli -- {{ARGS}}

# The dashboard, /metrics and /healthz on DATABASE_URL's database, e.g.
# `just dashboard --read-only` (open http://127.0.0.1:9187/).
dashboard *ARGS:
    cargo run -q -p sluice-cli -- serve --listen 127.0.0.1:9187 {{ARGS}}

# The dashboard's tests: its pages and actions (tests/web.rs) and its unit tests.
test-web:
    cargo test --test web
    cargo test -p sluice-web

# The dashboard in headless Chromium against `sluice serve` (tests/browser.rs):
# needs Debian's chromium and chromium-driver (or CHROMEDRIVER=path).
test-browser:
    cargo test --test browser -- --ignored

# Retake the dashboard's screenshots in docs/screenshots/ from the browser tests.
screenshots:
    SLUICE_SCREENSHOTS=docs/screenshots cargo test --test browser -- --ignored

# The chaos suite: killed workers, a Postgres restart (private cluster), out-of-order
# commits, a pinned xmin. About 6 minutes on 2 cores; CHAOS_* variables shrink it
# (see docs/RELIABILITY.md). `just chaos -- NAME` runs the parts whose name has NAME.
chaos *ARGS:
    cargo test --test chaos {{ARGS}}

# The benchmark (see docs/BENCHMARKS.md): `just bench --scenario drain`, `just bench --smoke`,
# `just bench --peers` to run the peer queues in the same run.
bench *ARGS:
    cargo run --release -p sluice-bench -- {{ARGS}}

# What `/metrics`, `sluice stats` and the dashboard cost on a backlog (docs/BENCHMARKS.md, "The
# queue's figures on a backlog"): builds database sluice_stats_backlog with EVENTS events (default
# 10,000,000: about 5 GB and a few minutes) and times the three, e.g. `just stats-backlog 1000000`.
stats-backlog EVENTS="10000000":
    cargo build --release -p sluice-cli
    SLUICE={{target}}/release/sluice crates/sluice-bench/stats/measure.sh {{EVENTS}}

# The Python client of the gateway: its tests against a real `sluice serve`.
test-python:
    cargo build -q -p sluice-cli
    python3 -m pip install -q --disable-pip-version-check -e 'clients/python[test]'
    cd clients/python && SLUICE_BIN={{target}}/debug/sluice python3 -m pytest -q

# The gateway example: Python producer and consumer beside a Rust subscriber.
gateway-example:
    cargo build -q -p sluice-cli
    cargo build -q --example gateway_audit
    SLUICE_BIN={{target}}/debug/sluice RUST_SUBSCRIBER_CMD={{target}}/debug/examples/gateway_audit bash examples/gateway/run.sh

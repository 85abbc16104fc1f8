#!/usr/bin/env bash
# The gateway end to end: a Python producer publishes orders over the
# WebSocket gateway, a Python consumer bills them, and optionally another
# subscriber (e.g. Rust) takes the same stream through a second consumer.
#
#   examples/gateway/run.sh [N]        # N orders, default 200
#
# Environment:
#   SLUICE_BIN           the sluice binary (default: target/debug/sluice of this repository)
#   POSTGRES_URL         the PostgreSQL server, without a database
#                        (default postgres://postgres@127.0.0.1:5432); a temporary
#                        database is made on it and dropped at the end
#   PYTHON               the Python with websockets and cryptography (default python3)
#   RUST_SUBSCRIBER_CMD  a shell command run beside the Python consumer, waited for,
#                        and required to succeed. It gets DATABASE_URL, SLUICE_GATEWAY_URL,
#                        SLUICE_STREAM (orders), SLUICE_CONSUMER (audit) and
#                        SLUICE_EVENTS (N) in its environment.
#   EXAMPLE_TIMEOUT      seconds the consumers get to finish (default 120)
#
# Exits non-zero if any step fails, if the Python consumer did not bill every
# order, or if the extra subscriber fails or does not finish in time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
sluice_bin=${SLUICE_BIN:-$repo/target/debug/sluice}
postgres=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
python=${PYTHON:-python3}
count=${1:-200}
timeout=${EXAMPLE_TIMEOUT:-120}

database=sluice_gateway_example_$$_$RANDOM
work=$(mktemp -d)
serve_pid=""
consumer_pid=""
rust_pid=""

cleanup() {
    local status=$?
    if [[ -n $consumer_pid ]] && kill -0 "$consumer_pid" 2>/dev/null; then
        kill "$consumer_pid" 2>/dev/null || true
    fi
    if [[ -n $rust_pid ]] && kill -0 "$rust_pid" 2>/dev/null; then
        kill -- "-$rust_pid" 2>/dev/null || true  # its process group: cargo run and what it runs
    fi
    if [[ -n $serve_pid ]] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -INT "$serve_pid" 2>/dev/null || true  # as Ctrl-C: a graceful stop
        for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$serve_pid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    psql "$postgres/postgres" -X -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null || status=1
    if [[ $status -ne 0 && -s $work/serve.log ]]; then
        echo "--- sluice serve's log:" >&2
        tail -n 30 "$work/serve.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

say() { printf '== %s\n' "$*"; }

# Waits for process $1 (named $2) for at most $3 seconds; returns its status.
wait_for() {
    local pid=$1 name=$2 limit=$3
    local deadline=$((SECONDS + limit))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "$name did not finish within ${limit}s" >&2
            return 1
        fi
        sleep 0.2
    done
    wait "$pid"
}

[[ -x $sluice_bin ]] || { echo "no sluice binary at $sluice_bin: cargo build, or set SLUICE_BIN" >&2; exit 1; }
# The client of this checkout, with no install step.
export PYTHONPATH="$repo/clients/python/src${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c 'import websockets, cryptography' 2>/dev/null ||
    { echo "$python lacks websockets or cryptography: pip install -e clients/python" >&2; exit 1; }

say "database $database"
psql "$postgres/postgres" -X -q -c "CREATE DATABASE $database"
export DATABASE_URL=$postgres/$database
sluice() { "$sluice_bin" "$@"; }
sluice migrate up >/dev/null
sluice stream create orders >/dev/null
sluice consumer create orders billing --start beginning --max-attempts 5 --backoff 100ms,1s >/dev/null
sluice consumer create orders audit --start beginning >/dev/null

say "keys: shop-producer may publish to orders, billing-py may take orders/billing"
producer_public=$("$python" -m sluice_client keygen "$work/producer.pem")
consumer_public=$("$python" -m sluice_client keygen "$work/consumer.pem")
sluice gateway key add shop-producer --public-key "$producer_public" --publish orders >/dev/null
sluice gateway key add billing-py --public-key "$consumer_public" --consume orders/billing >/dev/null

"$sluice_bin" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
url=""
for _ in $(seq 100); do
    url=$(grep -o 'ws://[^ ,]*' "$work/serve.out" || true)
    [[ -n $url ]] && break
    kill -0 "$serve_pid" 2>/dev/null || { echo "sluice serve stopped" >&2; exit 1; }
    sleep 0.1
done
[[ -n $url ]] || { echo "sluice serve did not print its gateway address" >&2; exit 1; }
export SLUICE_GATEWAY_URL=$url
say "sluice serve: gateway at $url"

if [[ -n ${RUST_SUBSCRIBER_CMD:-} ]]; then
    say "subscriber beside: $RUST_SUBSCRIBER_CMD"
    # In a process group of its own, so that cleanup stops all it started.
    SLUICE_STREAM=orders SLUICE_CONSUMER=audit SLUICE_EVENTS=$count setsid -w bash -c "$RUST_SUBSCRIBER_CMD" &
    rust_pid=$!
fi
"$python" "$here/consumer.py" --key "$work/consumer.pem" --expect "$count" --timeout "$timeout" &
consumer_pid=$!
"$python" "$here/producer.py" --key "$work/producer.pem" --count "$count"

failed=0
# The consumer gives up by itself after $timeout s, and says how far it got.
wait_for "$consumer_pid" "the Python consumer" $((timeout + 15)) || failed=1
if [[ -n $rust_pid ]]; then
    wait_for "$rust_pid" "the subscriber beside" "$timeout" || { echo "the subscriber beside failed" >&2; failed=1; }
fi

# Every billing task was acked: none is left in any state.
left=$(sluice --json tasks list orders billing | "$python" -c 'import json, sys; print(len(json.load(sys.stdin)["tasks"]))')
if [[ $left -ne 0 ]]; then
    echo "$left billing task(s) left unfinished:" >&2
    sluice tasks list orders billing >&2
    failed=1
fi
((failed == 0)) || exit 1
say "every order billed"

#!/usr/bin/env bash
# What reading the queue's figures costs on a backlog (docs/BENCHMARKS.md,
# "The queue's figures on a backlog"): builds database sluice_stats_backlog
# on DATABASE_URL's server with EVENTS events (default 10,000,000; about
# 5 GB and a few minutes), then times five scrapes of `sluice serve`'s
# /metrics, five `sluice stats` and five dashboard overviews, first on
# fresh tables (no statistics: autovacuum off, never analyzed), then after
# ANALYZE. KEEP=1 reuses the database if it exists. SLUICE names the binary
# (default target/release/sluice; `cargo build --release -p sluice-cli`).
#
#   just stats-backlog            # 10,000,000 events
#   just stats-backlog 1000000
set -euo pipefail
cd "$(dirname "$0")/../../.."
EVENTS=${1:-10000000}
SLUICE=${SLUICE:-target/release/sluice}
BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=sluice_stats_backlog
URL="${BASE%/*}/$DB"
PORT=${PORT:-19187}

if [ "${KEEP:-0}" = 1 ] && psql "$URL" -Atc "SELECT 1 FROM sluice.streams WHERE name = 'orders'" 2>/dev/null | grep -q 1; then
    echo "reusing $DB"
    "$SLUICE" --database-url "$URL" migrate up >/dev/null
else
    psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    "$SLUICE" --database-url "$URL" migrate up >/dev/null
    "$SLUICE" --database-url "$URL" stream create orders >/dev/null
    "$SLUICE" --database-url "$URL" consumer create orders backlog >/dev/null
    "$SLUICE" --database-url "$URL" consumer create orders lagging >/dev/null
    time psql -q "$URL" -v events="$EVENTS" -f crates/sluice-bench/stats/backlog.sql
    psql -q "$URL" -c "VACUUM (ANALYZE false) sluice.tasks" -c "VACUUM (ANALYZE false) sluice.events"
    psql -q "$URL" -c "SELECT pg_stat_reset()" -c "ALTER TABLE sluice.tasks SET (autovacuum_enabled = false)"
fi
psql -At "$URL" -c "SELECT 'tasks ' || count(*) FILTER (WHERE state = 'available') || ' available, '
                            || count(*) FILTER (WHERE state = 'discarded') || ' discarded, '
                            || count(*) FILTER (WHERE state = 'running') || ' running' FROM sluice.tasks"

"$SLUICE" --database-url "$URL" serve --listen "127.0.0.1:$PORT" --read-only >/tmp/sluice-stats-serve.log 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done

measure() {
    echo "== $1 (uptime: $(uptime | sed 's/.*load/load/'))"
    for i in 1 2 3 4 5; do
        printf '/metrics %s s   ' "$(curl -s -o /tmp/sluice-stats-metrics.txt -w '%{time_total}' "http://127.0.0.1:$PORT/metrics")"
        printf 'dashboard / %s s   ' "$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/")"
        start=$(date +%s.%N)
        "$SLUICE" --database-url "$URL" stats >/tmp/sluice-stats-stats.txt
        echo "sluice stats $(echo "$(date +%s.%N) - $start" | bc) s"
    done
    grep -E '^sluice_(tasks|consumer_lag_events|stream_events)' /tmp/sluice-stats-metrics.txt | grep -v ' 0$' || true
    cat /tmp/sluice-stats-stats.txt
}

measure "no statistics (never analyzed)"
psql -q "$URL" -c "ANALYZE sluice.tasks" -c "ANALYZE sluice.events"
measure "after ANALYZE"

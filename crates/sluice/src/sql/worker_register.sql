-- Registers (or revives) worker $1 of consumer $2 on host $3, process $4,
-- taken for dead after $5 ms without a heartbeat.
INSERT INTO sluice.workers (id, consumer_id, host, pid, dead_after)
VALUES ($1, $2, $3, $4, $5 * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), status = 'active', dead_after = excluded.dead_after

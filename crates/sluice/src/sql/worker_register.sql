INSERT INTO sluice.workers (id, consumer_id, host, pid)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), status = 'active'

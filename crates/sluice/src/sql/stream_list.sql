SELECT id, name, (extract(epoch FROM event_retention) * 1000)::bigint AS event_retention_ms, created_at
FROM sluice.streams
ORDER BY name

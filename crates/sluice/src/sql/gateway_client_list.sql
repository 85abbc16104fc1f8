-- The gateway's clients, connected first, then the latest to leave: status
-- `active` (tasks in its hands, or credit open on a subscription),
-- `idle` (connected, neither) or `disconnected` (closed, or no beat from its
-- connection for 30 s: its gateway stopped).
SELECT connection, key_name, client, host, pid, connected_at, seen_at, disconnected_at,
       subscriptions, credit, in_flight,
       CASE WHEN disconnected_at IS NOT NULL OR seen_at < now() - interval '30 seconds' THEN 'disconnected'
            WHEN in_flight > 0 OR credit > in_flight THEN 'active'
            ELSE 'idle' END AS status
FROM sluice.gateway_clients
ORDER BY disconnected_at DESC NULLS FIRST, connected_at DESC
LIMIT 1000

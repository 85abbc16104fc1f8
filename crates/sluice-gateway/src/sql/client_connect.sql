-- Connection $1 of key $2 (client name $3) is open, served by host $4,
-- process $5. Clients gone for more than a day are forgotten.
WITH forgotten AS (
    DELETE FROM sluice.gateway_clients WHERE disconnected_at < now() - interval '1 day'
)
INSERT INTO sluice.gateway_clients (connection, key_name, client, host, pid)
VALUES ($1, $2, $3, $4, $5)

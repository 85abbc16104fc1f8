-- Connection $1 is alive with $2 subscriptions, $3 credit in all and $4
-- tasks in its client's hands; answers whether its key $5 may still be used.
WITH beat AS (
    UPDATE sluice.gateway_clients
    SET seen_at = now(), subscriptions = $2, credit = $3, in_flight = $4
    WHERE connection = $1
)
SELECT EXISTS (SELECT 1 FROM sluice.gateway_keys WHERE id = $5 AND revoked_at IS NULL)

-- Connection $1 closed: nothing in its hands any more.
UPDATE sluice.gateway_clients
SET disconnected_at = now(), seen_at = now(), in_flight = 0
WHERE connection = $1

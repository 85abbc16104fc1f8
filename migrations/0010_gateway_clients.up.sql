-- The gateway's connected clients, for `sluice workers list` and the
-- dashboard: one row per connection, kept a day after it closes. The
-- connection beats every few seconds with what it holds; a row whose beats
-- stopped (its gateway died) reads as disconnected.
CREATE TABLE sluice.gateway_clients (
    connection       uuid PRIMARY KEY,
    key_name         text NOT NULL,
    client           text,
    host             text NOT NULL,
    pid              integer NOT NULL,
    connected_at     timestamptz NOT NULL DEFAULT now(),
    seen_at          timestamptz NOT NULL DEFAULT now(),
    subscriptions    integer NOT NULL DEFAULT 0,
    credit           integer NOT NULL DEFAULT 0,
    in_flight        integer NOT NULL DEFAULT 0,
    disconnected_at  timestamptz
);
CREATE INDEX gateway_clients_disconnected_at ON sluice.gateway_clients (disconnected_at)
    WHERE disconnected_at IS NOT NULL;

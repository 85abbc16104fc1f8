-- The gateway (docs/GATEWAY.md): its clients' keys, and the idempotency
-- keys of the events they publish.

-- One Ed25519 public key per client, with the streams it may publish to
-- and the consumers (`stream/consumer`) it may take tasks from. A revoked
-- key keeps its row (and its name) but cannot log in.
CREATE TABLE sluice.gateway_keys (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CONSTRAINT gateway_keys_name_valid CHECK (sluice.valid_name(name)),
    public_key  bytea NOT NULL UNIQUE CONSTRAINT gateway_keys_public_key_length CHECK (length(public_key) = 32),
    publish     text[] NOT NULL DEFAULT '{}',
    consume     text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- A publish retried with an idempotency key already used on its stream in
-- the last day gets the event stored the first time. The gateway forgets
-- keys older than a day.
CREATE TABLE sluice.gateway_publishes (
    stream_id        integer NOT NULL REFERENCES sluice.streams (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL
                     CONSTRAINT gateway_publishes_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    event_id         bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, idempotency_key)
);
CREATE INDEX gateway_publishes_created_at ON sluice.gateway_publishes (created_at);

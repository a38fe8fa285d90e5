-- MOSIP mode (`dedup abis serve`): MOSIP's referenceIds mapped to rows of the MOSIP
-- gallery, and every response sent, by requestId (a redelivered request is answered from
-- here, never worked twice). No biometric data: templates live in the gallery only.

CREATE TABLE mosip_references (
    reference_id   text PRIMARY KEY,
    row_id         bigint NOT NULL,
    state          text NOT NULL CHECK (state IN ('active', 'deleted')),
    request_id     text NOT NULL,              -- the INSERT that stored it
    inserted_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
CREATE UNIQUE INDEX mosip_references_active_row ON mosip_references (row_id) WHERE state = 'active';

CREATE TABLE mosip_requests (
    request_id     text PRIMARY KEY,
    operation      text NOT NULL,
    reference_id   text,
    return_value   text NOT NULL,
    failure_reason text,
    detail         text NOT NULL DEFAULT '',  -- why it failed, for operators (never biometric data)
    message_type   text NOT NULL CHECK (message_type IN ('text', 'bytes')),
    response       jsonb NOT NULL,
    received_at    timestamptz NOT NULL,
    answered_at    timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);
CREATE INDEX mosip_requests_answered ON mosip_requests (answered_at);

-- One row: the running consumer's heartbeat and the last error it met.
CREATE TABLE mosip_status (
    id             integer PRIMARY KEY CHECK (id = 1),
    pid            integer,
    started_at     timestamptz,
    heartbeat_at   timestamptz,
    working_on     text,
    pending        integer NOT NULL DEFAULT 0,  -- requests taken from the queue, not yet answered
    last_error     text,
    last_error_at  timestamptz
);
INSERT INTO mosip_status (id) VALUES (1);

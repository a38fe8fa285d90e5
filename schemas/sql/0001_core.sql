-- Centres, users, batches, enrolments, UINs, cases, decisions, audit.
-- Applied once by dedup.store.migrate (recorded in schema_migrations); never edit an
-- applied migration: add the next numbered file instead.

CREATE TABLE centres (
    centre_id   text PRIMARY KEY CHECK (centre_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);

CREATE TABLE users (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role        text NOT NULL CHECK (role IN ('centre', 'adjudicator', 'supervisor', 'admin')),
    centre_id   text REFERENCES centres,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    -- a centre account belongs to exactly one centre; nobody else belongs to one
    CHECK ((role = 'centre') = (centre_id IS NOT NULL))
);

-- A submitted manifest, identified by the hash of its bytes.
CREATE TABLE batches (
    batch_id        text PRIMARY KEY,
    manifest_sha256 text NOT NULL UNIQUE,
    manifest_name   text NOT NULL,
    centre_id       text REFERENCES centres,      -- owner: the submitting centre (NULL: several)
    submitted_by    text NOT NULL REFERENCES users,
    submitted_at    timestamptz NOT NULL DEFAULT now(),
    n_rows          integer NOT NULL,
    n_accepted      integer NOT NULL,
    n_rejected      integer NOT NULL
);

-- One row per enrolment that passed submission.
CREATE TABLE enrolments (
    enrolment_pk  bigserial PRIMARY KEY,          -- also the enrolment's gallery row id
    centre_id     text NOT NULL REFERENCES centres,
    enrolment_id  text NOT NULL,
    batch_id      text NOT NULL REFERENCES batches,
    row_index     integer NOT NULL,
    captured_at   timestamptz NOT NULL,
    photo_sha256  text NOT NULL CHECK (photo_sha256 ~ '^[0-9a-f]{64}$'),
    sex           text,
    birth_year    integer,
    region        text,
    state         text NOT NULL DEFAULT 'received' CHECK (state IN
                    ('received', 'processing', 'accepted', 'adjudication', 'duplicate', 'recapture', 'rejected')),
    reason        text,                           -- rejected: stable code; recapture: the request
    detail        text,
    uin           text UNIQUE,                    -- accepted: the UIN issued to it
    duplicate_of  text,                           -- duplicate: the existing UIN it was linked to
    received_at   timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (centre_id, enrolment_id)
);
CREATE INDEX enrolments_received ON enrolments (enrolment_pk) WHERE state = 'received';
CREATE INDEX enrolments_enrolment_id ON enrolments (enrolment_id);

-- The receipt: every manifest row, accepted or not, as it was judged at submission.
CREATE TABLE batch_rows (
    batch_id      text NOT NULL REFERENCES batches,
    row_index     integer NOT NULL,
    enrolment_id  text,
    centre_id     text,
    accepted      boolean NOT NULL,
    reason        text,
    detail        text,
    enrolment_pk  bigint REFERENCES enrolments,
    PRIMARY KEY (batch_id, row_index),
    CHECK (accepted = (enrolment_pk IS NOT NULL))
);
CREATE INDEX batch_rows_enrolment_id ON batch_rows (enrolment_id);

-- Every UIN ever issued. Rows are never updated or deleted, so a UIN is never reused.
CREATE TABLE uins (
    uin           text PRIMARY KEY CHECK (uin ~ '^[1-9][0-9]{11}$'),
    enrolment_pk  bigint NOT NULL UNIQUE REFERENCES enrolments,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    issued_by     text NOT NULL                   -- 'dedup run' or the adjudicator who decided distinct
);
ALTER TABLE enrolments ADD FOREIGN KEY (uin) REFERENCES uins (uin) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE enrolments ADD FOREIGN KEY (duplicate_of) REFERENCES uins (uin);

-- An enrolment with at least one candidate, waiting for (or past) a human decision.
CREATE TABLE cases (
    case_id       bigserial PRIMARY KEY,
    enrolment_pk  bigint NOT NULL UNIQUE REFERENCES enrolments,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'decided')),
    claimed_by    text REFERENCES users,
    lease_until   timestamptz,
    decision      text CHECK (decision IN ('duplicate', 'distinct', 'recapture')),
    duplicate_of  text REFERENCES uins,
    decided_by    text REFERENCES users,
    decided_at    timestamptz,
    comment       text,
    CHECK ((status = 'decided') = (decision IS NOT NULL)),
    CHECK ((decision = 'duplicate') = (duplicate_of IS NOT NULL))
);
CREATE INDEX cases_open ON cases (opened_at, case_id) WHERE status = 'open';

-- The candidates of a case with their exact scores, highest first.
CREATE TABLE case_candidates (
    case_id       bigint NOT NULL REFERENCES cases,
    rank          integer NOT NULL,
    gallery_row   bigint,                         -- NULL: found in the same batch or in flight (not yet in the gallery)
    enrolment_pk  bigint REFERENCES enrolments,   -- NULL for synthetic gallery rows
    synthetic     boolean NOT NULL DEFAULT false,
    score         real NOT NULL,
    found_in      text NOT NULL CHECK (found_in IN ('gallery', 'batch', 'in_flight')),
    PRIMARY KEY (case_id, rank),
    CHECK (synthetic = (enrolment_pk IS NULL))
);

-- Who did what, when. Append-only: updates, deletes and truncation raise.
CREATE TABLE audit (
    audit_id     bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text NOT NULL,
    action       text NOT NULL,
    object_type  text NOT NULL,
    object_id    text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_object ON audit (object_type, object_id);

CREATE FUNCTION dedup_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP;
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION dedup_forbid_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION dedup_forbid_change();
CREATE TRIGGER uins_append_only BEFORE UPDATE OR DELETE ON uins
    FOR EACH ROW EXECUTE FUNCTION dedup_forbid_change();
CREATE TRIGGER uins_no_truncate BEFORE TRUNCATE ON uins
    FOR EACH STATEMENT EXECUTE FUNCTION dedup_forbid_change();

-- The deployment's record that its galleries exist (issue 11): which gallery (id, model) a
-- gallery folder must hold, the generation CURRENT must name, its live row count and its
-- sealed manifest (a copy: a lost or damaged manifest file is restored from it).
--
-- Two phases around every switch of CURRENT (dedup/index/deployed.py): pending_* is set
-- before the files switch; after it, the pending generation becomes current and pending_*
-- is cleared. A crash in between leaves CURRENT naming either `generation` (the switch did
-- not happen) or `pending_generation` (it did; completed on the next open). Anything else is
-- damage, and every command that uses the gallery refuses.

CREATE TABLE galleries (
    gallery_key              text PRIMARY KEY,            -- the folder, relative to the deployment
    gallery_id               text NOT NULL UNIQUE,        -- also in every manifest of the folder
    model_id                 text NOT NULL,
    dim                      integer NOT NULL CHECK (dim >= 2),
    generation               bigint NOT NULL DEFAULT -1,  -- -1: being created
    row_count                bigint NOT NULL DEFAULT 0 CHECK (row_count >= 0),
    manifest_sha256          text,
    manifest                 text,
    pending_generation       bigint,
    pending_row_count        bigint,
    pending_manifest_sha256  text,
    pending_manifest         text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    verified_at              timestamptz,                 -- the last `dedup gallery verify`
    verify_ok                boolean,
    verify_summary           jsonb,
    CHECK ((pending_generation IS NULL) = (pending_manifest IS NULL))
);

-- `dedup run` works in units: a set of received enrolments taken together through
-- embed -> search -> decide -> gallery add. A unit's state says which steps are done, so a
-- run killed at any point resumes the unit where it stopped (see dedup/pipeline.py).

CREATE TABLE run_units (
    unit_id     bigserial PRIMARY KEY,
    state       text NOT NULL DEFAULT 'claimed' CHECK (state IN ('claimed', 'decided', 'done')),
    size        integer NOT NULL,
    model_id    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_units_unfinished ON run_units (unit_id) WHERE state <> 'done';

ALTER TABLE enrolments ADD COLUMN unit_id bigint REFERENCES run_units;
CREATE INDEX enrolments_unit ON enrolments (unit_id);

-- Control cases that cannot be told from real ones (issue 12).
--
-- A control case shows its source case's candidates, so a duplicate decision names one of
-- them: keep which identity it named, as cases.duplicate_of does for a real case.
ALTER TABLE control_cases ADD COLUMN duplicate_of text;

-- Case numbers set aside while real cases are opened (`dedup run`), for control cases to
-- take later: a control then carries a number from among the real cases waiting at its time,
-- not the newest number of all (which would give it away). An unused number is a gap in
-- the numbering, as a rolled-back transaction leaves.
CREATE TABLE reserved_case_numbers (
    case_id    bigint PRIMARY KEY,
    opened_at  timestamptz NOT NULL DEFAULT now()
);

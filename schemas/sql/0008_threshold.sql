-- The threshold each unit of `dedup run` judged its enrolments at (issue 13): the value, its
-- source (setting, deployment-calibration, model-card), the tail model it rests on (basis),
-- the gallery size it was evaluated at and the FPIR it implied there. An enrolment's threshold
-- is its unit's; `dedup status`/`report` show it.
ALTER TABLE run_units ADD COLUMN threshold double precision;
ALTER TABLE run_units ADD COLUMN threshold_source text;
ALTER TABLE run_units ADD COLUMN threshold_basis text;
ALTER TABLE run_units ADD COLUMN threshold_gallery_size bigint;
ALTER TABLE run_units ADD COLUMN threshold_fpir double precision;

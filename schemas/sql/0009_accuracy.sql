-- The deployment measures itself (issue 13): each refresh of the impostor tail that
-- `dedup run` (or `dedup accuracy --refresh`) makes from the gallery's accepted identities.
-- `figures` holds statistics only: counts, rates, intervals, the fitted tail model and a
-- coarse score histogram; never a template, a photo, an identity or a demographic value of
-- one person.
CREATE TABLE accuracy_refreshes (
    refresh_id      bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    made_by         text NOT NULL,
    model_id        text NOT NULL,
    gallery_size    bigint NOT NULL,
    accepted        bigint NOT NULL,
    impostor_pairs  bigint NOT NULL,
    threshold       double precision NOT NULL,
    figures         jsonb NOT NULL
);
CREATE INDEX accuracy_refreshes_at ON accuracy_refreshes (refresh_id DESC);

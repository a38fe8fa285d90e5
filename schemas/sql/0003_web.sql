-- The web app (`dedup serve`): passwords and lock-out, browser sessions, centre API tokens,
-- control pairs (known answers mixed into the queue) and what each web decision recorded.

-- Web logins, one row per user who has a password: an argon2id hash (argon2-cffi's encoded
-- form) and the lock-out counters. A separate table, so `users` keeps its columns. No row:
-- this user cannot log in to the web app (set a password with `dedup user passwd NAME`).
CREATE TABLE web_accounts (
    user_name      text PRIMARY KEY REFERENCES users,
    password_hash  text NOT NULL,
    failed_logins  integer NOT NULL DEFAULT 0,
    locked_until   timestamptz,
    changed_at     timestamptz NOT NULL DEFAULT now()
);

-- A browser session. The cookie carries the session id, signed; only its SHA-256 is stored,
-- so a copy of this table opens no session.
CREATE TABLE web_sessions (
    session_sha256 text PRIMARY KEY CHECK (session_sha256 ~ '^[0-9a-f]{64}$'),
    user_name      text NOT NULL REFERENCES users,
    csrf_token     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_name);

-- A centre's API token: "dk_<token_id>_<secret>"; only the secret's SHA-256 is stored. The
-- API acts as the token's centre user, so it sees that centre's batches only.
CREATE TABLE api_tokens (
    token_id       text PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]{12}$'),
    centre_id      text NOT NULL REFERENCES centres,
    user_name      text NOT NULL REFERENCES users,
    secret_sha256  text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    label          text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    revoked_at     timestamptz,
    last_used_at   timestamptz
);

-- A pair with a known answer, taken from a decided case (probe photo and one candidate's
-- photo, both in the deployment's store).
CREATE TABLE control_pairs (
    pair_id            bigserial PRIMARY KEY,
    probe_sha256       text NOT NULL CHECK (probe_sha256 ~ '^[0-9a-f]{64}$'),
    candidate_sha256   text NOT NULL CHECK (candidate_sha256 ~ '^[0-9a-f]{64}$'),
    score              real NOT NULL,
    truth              text NOT NULL CHECK (truth IN ('duplicate', 'distinct')),
    source_case        bigint REFERENCES cases,
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL,
    UNIQUE (probe_sha256, candidate_sha256)
);

-- A control pair put into the queue for one adjudicator. Its number comes from the cases'
-- sequence, so it looks like any other case; its decision is scored, never acted on.
CREATE TABLE control_cases (
    case_id      bigint PRIMARY KEY DEFAULT nextval('cases_case_id_seq'),
    pair_id      bigint NOT NULL REFERENCES control_pairs,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'decided', 'withdrawn')),
    claimed_by   text NOT NULL REFERENCES users,
    lease_until  timestamptz,
    decision     text CHECK (decision IN ('duplicate', 'distinct', 'recapture')),
    correct      boolean,
    decided_at   timestamptz,
    comment      text,
    CHECK ((status = 'decided') = (decision IS NOT NULL))
);
CREATE INDEX control_cases_holder ON control_cases (claimed_by) WHERE status = 'open';

-- What the web app recorded with each decision (real and control cases): whether the score
-- was hidden until then (blind mode), the top score shown afterwards, time on the case.
CREATE TABLE web_decisions (
    case_id       bigint PRIMARY KEY,
    control       boolean NOT NULL,
    decided_by    text NOT NULL REFERENCES users,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    decision      text NOT NULL CHECK (decision IN ('duplicate', 'distinct', 'recapture')),
    candidate     integer,               -- the rank chosen for a duplicate decision
    blind         boolean NOT NULL,
    top_score     real,
    seconds       real                   -- from the claim to the decision
);
CREATE INDEX web_decisions_by ON web_decisions (decided_by);

-- Lock-out that cannot be used as a weapon (issue 12). Failed logins from addresses an account
-- has never logged in from share the account's count in `web_accounts` (one budget for all of
-- them together, so many addresses cannot multiply the guesses); an address from which the
-- account has logged in with its password is "known" and gets a count and a lock of its own
-- here, so strangers locking the account do not lock its owner out of their own workstation.

-- Pool locks in a row (each lasts twice the one before, up to a cap); see dedup/store/auth.py.
ALTER TABLE web_accounts ADD COLUMN locks integer NOT NULL DEFAULT 0;

-- One row per (account, client address) that has logged in successfully: a bounded few per
-- account (the oldest are dropped), forgotten after a while and on a password change.
CREATE TABLE login_pairs (
    user_name      text NOT NULL REFERENCES users,
    address        text NOT NULL,
    last_login     timestamptz NOT NULL DEFAULT now(),
    failed_logins  integer NOT NULL DEFAULT 0,
    locked_until   timestamptz,
    PRIMARY KEY (user_name, address)
);

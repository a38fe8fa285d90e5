"""PostgreSQL store of a deployment, and the only package that runs SQL: connection and
embedded server (``db``), schema migrations (``migrate``), and one repository module per
table group: ``centres``, ``users``, ``auth`` (web passwords, sessions, API tokens),
``batches`` (receipts and outcomes), ``identities``, ``cases`` and ``controls`` (the
adjudication queue), ``supervision`` (supervisor figures, audit search), ``audit``, and the
pipeline's own modules. Every module talks psycopg 3; the embedded server and
``--database-url`` take the same code path once connected."""

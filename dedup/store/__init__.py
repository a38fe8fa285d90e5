"""PostgreSQL store of a deployment: connection and embedded server (``db``), schema
migrations (``migrate``), and one repository module per table group (``centres``,
``users``, ``batches``, ``enrolments``, ``audit``). Every module talks psycopg 3; the
embedded server and ``--database-url`` take the same code path once connected."""

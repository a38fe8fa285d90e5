"""Helpers shared by the test packages (import ``tests.support.<module>``; fixtures stay in
the conftest files, which nothing imports)."""

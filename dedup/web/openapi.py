"""Write (or check) the committed OpenAPI document of the centres' API: ``schemas/openapi.json``.

    python -m dedup.web.openapi          # regenerate after changing dedup/web/api.py
    python -m dedup.web.openapi --check  # exit 1 when the committed file is stale

``tests/web/test_api_contract.py`` fails when the file differs from what the running app serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dedup.web.api import openapi_document

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"


def render() -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
        if current != text:
            print(f"{SCHEMA_FILE} is stale: run python -m dedup.web.openapi", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

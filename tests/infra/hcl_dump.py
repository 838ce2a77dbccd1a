"""Print the parsed HCL of Terraform files as one JSON object: {file name: python-hcl2 output}.

Run by tests/infra/test_terraform.py with the Python of the .tools/hcl2 venv (python-hcl2 conflicts
with the project's pins, so it is not importable from the test itself):

    .tools/hcl2/bin/python tests/infra/hcl_dump.py infra/main.tf infra/environments/prod.tfvars ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hcl2  # type: ignore[import-not-found]  # only in the .tools/hcl2 venv


def main(paths: list[str]) -> None:
    """Parse each file and write {path: parsed} to stdout."""
    # Plain values: no comment or block markers, string literals without their quotes ("python",
    # not '"python"'); expressions stay as "${...}".
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    parsed = {}
    for path in paths:
        with Path(path).open(encoding="utf-8") as handle:
            parsed[path] = hcl2.load(handle, serialization_options=options)
    json.dump(parsed, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])

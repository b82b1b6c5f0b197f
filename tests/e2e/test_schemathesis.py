"""schemathesis against both APIs' OpenAPI documents, all checks, a bounded number of examples
per operation: no 5xx, every response in its documented schema, every schema-valid request
accepted and every schema-violating one refused.

Operations that make the server contact another host (vCenter discovery, CloudStack
look-ups, a VMA's health) are excluded: generated addresses would leave loopback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MAX_EXAMPLES = "10"
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))

# the token reaches schemathesis through the environment (never its command line)
CONFIG = """\
headers = { Authorization = "Bearer ${API_TOKEN}" }

[checks.positive_data_acceptance]
# 422: the request fits its schema, but a rule no schema can state refuses it (a cron that does
# not parse, a VM that does not exist, two disks with one key); each API documents its 422s
expected-statuses = ["2XX", "401", "403", "404", "409", "422"]
"""


def _run(tmp_path: Path, url: str, token: str, cafile: Path | None, excluded: str) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{url}/api/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "1",
        "--exclude-path-regex",
        excluded,
        "--no-color",
    ]
    if cafile is not None and url.startswith("https://"):
        argv += ["--tls-verify", str(cafile)]
    env = {**os.environ, "API_TOKEN": token, "SCHEMATHESIS_HOOKS": ""}
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = tmp_path / "schemathesis.txt"
    report.write_text(res.stdout + res.stderr)
    # the failures, one block per operation: its name, the check and the answer
    wanted = re.compile(r"^(_{3,} .+ _{3,}|- ST\d+ .+|\[\d{3}\] .+|    `.{0,300})$")
    summary = [line[:400] for line in res.stdout.splitlines() if wanted.match(line)]
    assert res.returncode == 0, "\n".join(summary[-120:]) + f"\n(full report: {report})"


def test_oma_api(tmp_path):
    from labtest.oma import oma_services

    with oma_services(tmp_path) as oma:
        _run(
            tmp_path,
            oma.url,
            oma.admin_token,
            oma.data_dir / "pki" / "ca.crt",
            r"^/api/v1/(discovery|cloudstack-targets/[^/]+/(test|networks|offerings|templates)"
            r"|vma-appliances/[^/]+/test)",
        )


def test_vma_api(tmp_path):
    from labtest.vma import vma_server

    with vma_server(tmp_path) as vma:
        cafile = getattr(vma, "ca_file", None)
        _run(tmp_path, vma.url, vma.token, cafile, r"^/api/v1/(discover|vms)")

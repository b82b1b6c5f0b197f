"""A whole lab migration with the ``oma`` command alone: VMA, vCenter login and CloudStack
target registered and tested, the VM discovered and added, replicated, failed over — against
vcsim, the real VMA API server (migratekit), the CloudStack simulator and the real
``oma serve`` + ``oma worker``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labtest.cli import run_oma
from labtest.cloudstack import cloudstack_sim
from labtest.labvm import create_lab_vm
from labtest.oma import oma_services
from labtest.vcsim import vcsim
from labtest.vma import vma_server

pytestmark = pytest.mark.slow
MiB = 1 << 20


def test_whole_lab_migration_with_the_cli_alone(tmp_path: Path) -> None:
    with vcsim(tmp_path / "vc") as vc, cloudstack_sim(tmp_path / "cs") as sim:
        vm = create_lab_vm(vc, tmp_path / "images", "web-1", [8 * MiB, 4 * MiB], seed=5)
        with (
            vma_server(tmp_path / "vma", vcenter=vc, lab_dir=tmp_path / "images") as vma,
            # the VMA is registered by token (not enrolled): its NBD traffic is plaintext
            oma_services(
                tmp_path / "oma", cloudstack=sim, extra_env={"OMA_NBD_ALLOW_PLAINTEXT": "true"}
            ) as oma,
        ):
            env = {k: v for k, v in os.environ.items() if not k.startswith("OMA_")}
            env.update(oma.client_env, OMA_CLI_CONFIG=str(tmp_path / "cli.toml"))
            _migrate(env, vc, sim, vma, vm)


def _ok(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    res = run_oma(env, *args, stdin=stdin, timeout=timeout)
    assert res.returncode == 0, f"oma {' '.join(args)}: {res.stderr}"
    return res.stdout


def _migrate(env: dict[str, str], vc, sim, vma, vm) -> None:
    # what the OMA works with, each proven by its test command
    _ok(env, "vma", "add", "vma-1", "--url", vma.url, "--token-stdin", stdin=vma.token)
    assert "token accepted" in _ok(env, "vma", "test", "vma-1")
    _ok(
        env, "vcenter", "add", "vc", "--host", f"{vc.host}:{vc.port}",
        "--username", vc.username, "--password-stdin", "--insecure", "--default",
        stdin=vc.password,
    )  # fmt: skip
    assert "web-1" in _ok(env, "discover")
    _ok(
        env, "target", "add", "lab", "--endpoint", sim.endpoint, "--api-key", sim.api_key,
        "--secret-key-stdin", "--zone", sim.zone_id, "--oma-vm", sim.oma_vm_id,
        "--disk-offering", sim.custom_disk_offering_id, "--default", stdin=sim.secret_key,
    )  # fmt: skip
    assert _ok(env, "target", "test").splitlines()[-1].startswith("target lab ok")

    # the VM under management, replicated
    added = _ok(env, "discover", "--add", "web-1")
    assert added.startswith("added web-1 ")
    listed = _ok(env, "discover")
    assert any(ln.startswith("web-1 ") and " yes " in ln for ln in listed.splitlines())
    synced = _ok(env, "replicate", "web-1", "--watch", "--interval", "0.2", timeout=300)
    summary = synced.strip().splitlines()[-1]
    assert " completed (full): moved " in summary and "/s)" in summary, synced
    job = json.loads(_ok(env, "jobs", "--vm", "web-1", "--json"))["items"][0]
    assert job["status"] == "completed" and job["bytes_done"] > 0

    # fail over with what the target lists, named as it lists them
    networks = json.loads(_ok(env, "target", "networks", "--json"))
    network = next(n["name"] for n in networks if n["id"] == sim.network_id)
    offerings = json.loads(_ok(env, "target", "offerings", "--json"))["items"]
    offering = next(o["name"] for o in offerings if o["id"] == sim.custom_service_offering_id)
    nics = [n["network"] for n in vm.get("nics") or []] or ["VM Network"]
    mapping = [arg for name in nics for arg in ("--network", f"{name}={network}")]
    failed_over = _ok(
        env, "failover", "web-1", *mapping, "--offering", offering,
        "--template", sim.template_id[:8], "--graceful-timeout", "5", "--watch",
        "--interval", "0.2", timeout=300,
    )  # fmt: skip
    assert " completed: target VM " in failed_over.strip().splitlines()[-1], failed_over
    shown = _ok(env, "vm", "show", "web-1")
    assert shown.startswith("web-1  failed_over"), shown
    record = json.loads(_ok(env, "failover", "show", "web-1", "--json"))
    assert record["params"]["service_offering_id"] == sim.custom_service_offering_id
    assert record["params"]["template_id"] == sim.template_id
    assert set(record["params"]["network_mappings"].values()) == {sim.network_id}
    shown = _ok(env, "failover", "show", "web-1")
    assert shown.splitlines()[0].startswith("failover ") and " of web-1: completed " in shown

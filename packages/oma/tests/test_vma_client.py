"""VmaClient against a real stub VMA HTTP server on loopback."""

from __future__ import annotations

import pytest

from labtest.oma import StubVma, progress_doc
from labtest.procs import free_port
from oma.errors import VmaClientError, VmaUnreachable
from oma.vma_client import VmaClient, error_status


@pytest.fixture
def vma():
    with StubVma() as stub:
        yield stub


@pytest.fixture
def client(vma):
    with VmaClient(vma.url, vma.token, retries=0) as c:
        yield c


def test_replicate_sends_the_documented_body(vma, client):
    out = client.replicate(
        "job-1",
        "vm-1",
        [
            {
                "disk_key": 2000,
                "target_uri": "nbd://127.0.0.1:10100/vol-a",
                "previous_change_id": "",
            },
            {
                "disk_key": "2001",
                "target_uri": "nbd://127.0.0.1:10101/vol-b",
                "previous_change_id": "gen-3",
            },
        ],
        target_is_zero=True,
    )
    assert out == {"job_id": "job-1", "status": "queued"}
    assert vma.replicate_calls == [
        {
            "job_id": "job-1",
            "vm_id": "vm-1",
            "disks": [
                {
                    "disk_key": "2000",
                    "target_uri": "nbd://127.0.0.1:10100/vol-a",
                    "previous_change_id": None,
                },
                {
                    "disk_key": "2001",
                    "target_uri": "nbd://127.0.0.1:10101/vol-b",
                    "previous_change_id": "gen-3",
                },
            ],
            "options": {"verify": False, "target_is_zero": True},
        }
    ]


def test_progress_batch_returns_models_and_not_found(vma, client):
    vma.set_progress(
        "a",
        progress_doc("a", "running", [{"disk_key": "2000", "bytes_total": 100, "bytes_done": 40}]),
    )
    jobs, missing = client.progress_batch(["a", "b"])
    assert [j.job_id for j in jobs] == ["a"]
    assert jobs[0].bytes_done == 40 and jobs[0].disks[0].disk_key == "2000"
    assert missing == ["b"]
    assert client.progress_batch([]) == ([], [])


def test_unknown_job_keeps_status_and_vma_message(client):
    with pytest.raises(VmaClientError) as err:
        client.get_job("nope")
    assert error_status(err.value) == 404
    assert err.value.code == "not_found"
    assert "job nope not found" in str(err.value)


def test_bad_token_is_401(vma):
    with VmaClient(vma.url, "wrong-token", retries=0) as c, pytest.raises(VmaClientError) as err:
        c.progress_batch(["x"])
    assert error_status(err.value) == 401


def test_unreachable_vma():
    with (
        VmaClient(f"http://127.0.0.1:{free_port()}", "t0ken-value", retries=0) as c,
        pytest.raises(VmaUnreachable) as err,
    ):
        c.progress_batch(["x"])
    assert error_status(err.value) is None


def test_invalid_progress_document_is_a_client_error(vma, client):
    vma.set_progress("bad", {"job_id": "bad", "status": "exploded", "disks": []})
    with pytest.raises(VmaClientError, match="invalid document"):
        client.progress_batch(["bad"])


def test_stop_job(vma, client):
    client.replicate("j2", "vm", [{"disk_key": "1", "target_uri": "nbd://h:1/x"}])
    assert client.stop_job("j2")["status"] == "stopped"
    assert vma.stop_calls == ["j2"]


def test_power_cycle_and_cbt(vma, client):
    assert client.power_state("vm-1") == "poweredOn"
    off = client.power_off("vm-1", graceful=True, timeout_s=30)
    assert (off["power_state"], off["method"]) == ("poweredOff", "graceful")
    assert client.power_state("vm-1") == "poweredOff"
    assert client.power_off("vm-1")["method"] == "already_off"
    assert client.power_on("vm-1")["power_state"] == "poweredOn"
    assert client.cbt("vm-1")["cbt_enabled"] is False
    assert client.enable_cbt("vm-1")["cbt_enabled"] is True
    assert vma.cbt == {"vm-1": True}


def test_discover_sends_credentials_in_the_body_only(vma, client):
    vma.vms = [{"id": "vm-1", "name": "web-1", "disks": []}]
    vms = client.discover("vc.lab:443", "administrator", "s3cret-pass", insecure=True)
    assert vms == vma.vms
    assert vma.discover_calls == [
        {
            "vcenter": "vc.lab:443",
            "username": "administrator",
            "password": "s3cret-pass",
            "insecure": True,
        }
    ]


def test_health_needs_no_token(vma):
    with VmaClient(vma.url, "not-the-token", retries=0) as c:
        assert c.health() == {"status": "ok"}

"""Fixtures: a real simulator process per test and the real ``cs`` client talking to it."""

from __future__ import annotations

from collections.abc import Iterator

import cs
import pytest

from labtest.cloudstack import SimInfo, cloudstack_sim


@pytest.fixture
def sim(tmp_path) -> Iterator[SimInfo]:
    with cloudstack_sim(tmp_path) as info:
        yield info


def make_client(sim: SimInfo, **kw) -> cs.CloudStack:
    """A ``cs`` client for ``sim`` with a short poll interval."""
    opts = {"poll_interval": 0.05, "job_timeout": 30, "fetch_result": True, **kw}
    return cs.CloudStack(endpoint=sim.endpoint, key=sim.api_key, secret=sim.secret_key, **opts)


@pytest.fixture
def client(sim: SimInfo) -> Iterator[cs.CloudStack]:
    c = make_client(sim)
    yield c
    c.session.close()

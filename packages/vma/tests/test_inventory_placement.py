"""Discovery reports where a VM runs: its ESXi host and each disk's datastore (vcsim).

The OMA caps concurrent replications per ESXi host and per datastore from these fields.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from labtest import vcsim as vcsim_mod

pytestmark = pytest.mark.slow


def test_discovery_reports_each_vms_host_and_disk_datastores(tmp_path: Path) -> None:
    from vma.vmware import VSphereClient

    with vcsim_mod.vcsim(tmp_path / "vc") as info:
        with VSphereClient(
            info.host, info.username, info.password, port=info.port, ca_file=info.ca_file
        ) as vc:
            found = vc.discover()
        si = SmartConnect(
            host=info.host,
            port=info.port,
            user=info.username,
            pwd=info.password,
            sslContext=ssl.create_default_context(cafile=info.ca_file),
        )
        try:
            view = si.content.viewManager.CreateContainerView(
                si.content.rootFolder, [vim.VirtualMachine], True
            )
            truth = {
                vm.config.uuid: (vm.runtime.host.name, {ds.name for ds in vm.datastore})
                for vm in view.view
                if vm.config is not None and not vm.config.template
            }
            view.Destroy()
        finally:
            Disconnect(si)
    assert found and {vm["id"] for vm in found} == set(truth)
    for vm in found:
        host, stores = truth[vm["id"]]
        assert host and vm["host"] == host
        assert vm["disks"] and all(d["datastore"] in stores for d in vm["disks"])

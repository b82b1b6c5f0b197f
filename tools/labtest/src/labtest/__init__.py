"""Lab fixtures shared by tests, benchmarks and the demo (not a released package).

Every server is started on a free loopback port, waited for, and stopped by PID.

- ``procs``: free ports, managed server processes (own process group, log file, stop by PID).
- ``nbd``: qemu-nbd exports, qcow2 images, persistent dirty bitmaps, qemu-io writes.
- ``vcsim``: builds (cached) and runs the patched vCenter simulator.
- ``cloudstack``: runs the CloudStack API simulator; fault injection helpers.
- ``labvm``: lab VMs (a vcsim VM plus one qcow2 per disk key), writes between syncs (recorded in
  each disk's write journal for vcsim's CBT), sha256, CBT reset, the VMA settings for its
  vSphere source with the VDDK stand-in (tools/vddk).
- ``vma``: runs the real VMA API server (gunicorn) with a generated token.
- ``oma``: runs the real ``oma serve`` and ``oma worker``; a stub VMA for poller tests.
- ``wave``: many VMs through two VMAs and the OMA (wave tests and benchmark); worker RSS.
"""

"""Disk sources: where a replication job reads a VM's disk bytes and changed blocks.

Both sources have the same interface (:class:`vma.sources.base.DiskSource`), so the job runner
cannot tell a lab VM (qcow2 + qemu-nbd + dirty bitmap) from a vSphere VM (nbdkit-vddk + CBT).
"""

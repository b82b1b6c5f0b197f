"""Lab fixtures shared by tests, benchmarks and the demo (not a released package).

Modules: ``procs`` (free ports, managed server processes stopped by PID), ``nbd`` (qemu-nbd
exports and qcow2 images with dirty bitmaps). Further modules start the lab's other real
servers (vcsim, the CloudStack simulator, the VMA and OMA services).
"""

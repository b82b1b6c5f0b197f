"""cloudstack_sim — a CloudStack API simulator for the OSSEA-Migrate lab.

Speaks the real HTTP API (``/client/api``, HMAC-SHA1 signatures verified with Java's URL
encoding, ``<command>response`` JSON, async jobs polled through ``queryAsyncJobResult``,
CloudStack's error codes), enforces the volume/VM state rules, persists its state, backs each
volume with a sparse file and exposes volumes attached to the OMA VM as by-id symlinks.
Run it with ``python -m cloudstack_sim --port N --state-dir DIR``.
"""

from __future__ import annotations

from .store import device_serial

__all__ = ["device_serial"]

"""Request signature verification exactly as CloudStack's ``ApiServer.verifyRequest`` does it.

CloudStack sorts the parameter names, re-encodes every value with Java's
``URLEncoder.encode(v, "UTF-8").replaceAll("\\+", "%20")``, joins ``name=value`` with ``&``,
lower-cases the whole string, signs it with HMAC-SHA1 and compares the base64 digest. Java's
encoder leaves only ``A-Z a-z 0-9 . - * _`` unencoded, so a value containing ``~`` (which
Python's ``quote`` leaves alone) fails verification on a real server — and here too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

_JAVA_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def java_urlencode(value: str) -> str:
    """``URLEncoder.encode(value, "UTF-8")`` with ``+`` replaced by ``%20``."""
    out = []
    for byte in value.encode("utf-8"):
        if byte in _JAVA_SAFE:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def signature_for(params: Mapping[str, str], secret: str) -> str:
    """The base64 HMAC-SHA1 signature CloudStack expects for ``params`` (without ``signature``)."""
    names = sorted(n for n in params if n.lower() != "signature")
    unsigned = "&".join(f"{n}={java_urlencode(params[n])}" for n in names)
    digest = hmac.new(secret.encode("utf-8"), unsigned.lower().encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def verify(
    params: Mapping[str, str], api_key: str, secret: str, now: datetime | None = None
) -> bool:
    """True for our API key, a valid signature and (v3) an unexpired ``expires``."""
    lowered = {k.lower(): v for k, v in params.items()}
    if lowered.get("apikey") != api_key or "signature" not in lowered:
        return False
    if lowered.get("signatureversion") == "3":
        expires = lowered.get("expires")
        if not expires:
            return False
        try:
            when = datetime.strptime(expires, EXPIRES_FORMAT)
        except ValueError:
            return False
        if when < (now or datetime.now(UTC)):
            return False
    expected = signature_for(params, secret)
    return hmac.compare_digest(expected.encode(), lowered["signature"].encode())

"""Signed messages: HMAC-SHA256 of a message body under the ``security_key`` setting.

With ``security_key`` set (``ENGINE_SECURITY_KEY``: one key, or a comma-separated list; the
first key signs, every key verifies, so keys rotate by putting the new one first and
dropping the old one once nothing signed with it is left) every producer adds the field
``s`` beside ``m`` in the stream entry::

    XADD P:q:{Q} * m <body> s <lower-case hex HMAC-SHA256(key, body)>

and a worker with a key dead-letters an entry whose ``s`` is missing or matches no key,
with reason ``bad signature``. The signature covers the exact bytes of ``m``: producers in
other languages sign what they send, nothing is re-encoded.

Where a body waits outside a stream it travels in an *envelope*: ``S`` + the 64 hex digits
+ the body. The delayed zset holds enveloped members (the delay mover script splits them
back into ``m`` and ``s``: Lua has no HMAC, and the mover needs no key), and signed control
commands are published enveloped. A plain msgpack map never starts with ``S`` (0x53 is a
positive fixint), so enveloped and bare members tell themselves apart, and a zset or a
channel may hold both while producers are being given a key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Sequence

from engine.exceptions import ConfigurationError

#: the reason a refused message is dead-lettered with
BAD_SIGNATURE = "bad signature"
#: first byte of an enveloped body
ENVELOPE = b"S"
#: hex digits of a signature
SIG_LEN = 64

_same = hmac.compare_digest
_BLOCK = 64    # SHA-256's block size, in bytes


def _pads(key: bytes) -> tuple[Any, Any]:
    """The inner and outer SHA-256 states of HMAC (RFC 2104) with ``key`` already fed:
    copying them per message costs a quarter of ``hmac.digest``, which sets up both again
    on every call (4 us a message against 1 us)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


class Signer:
    """Signs with the first key, verifies with any. Immutable, safe to share between threads
    (the precomputed states are only copied)."""

    __slots__ = ("keys", "_pads")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or not all(keys):
            raise ConfigurationError("security_key: every key must be non-empty")
        self.keys = tuple(keys)
        self._pads = tuple(_pads(key) for key in self.keys)

    def sign(self, body: bytes) -> bytes:
        """The lower-case hex HMAC-SHA256 of ``body`` under the signing key, as bytes."""
        inner, outer = self._pads[0]
        inner = inner.copy()
        inner.update(body)
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()

    def verify(self, body: bytes, signature: Any) -> bool:
        """True when ``signature`` (hex, bytes or str) is ``body``'s under any key."""
        if type(signature) is not bytes:
            if not isinstance(signature, str):
                return False
            signature = signature.encode()
        if len(signature) != SIG_LEN or not signature.islower() and not signature.isdigit():
            return False
        try:
            wanted = bytes.fromhex(signature.decode())
        except ValueError:
            return False
        for inner, outer in self._pads:
            inner = inner.copy()
            inner.update(body)
            outer = outer.copy()
            outer.update(inner.digest())
            if _same(outer.digest(), wanted):
                return True
        return False

    def wrap(self, body: bytes) -> bytes:
        """``body`` in an envelope (``S`` + signature + body)."""
        return ENVELOPE + self.sign(body) + body


def from_setting(value: Any) -> Signer | None:
    """``security_key`` as configured (None, ``"k1,k2"``, or a list of str/bytes) -> a
    Signer, or None when no key is set."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (str, bytes)):
        parts = value.split(b"," if isinstance(value, bytes) else ",")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigurationError(f"security_key must be text or a list of keys, "
                                 f"got {type(value).__name__}")
    keys = []
    for part in parts:
        key = part.encode() if isinstance(part, str) else part
        if not isinstance(key, bytes):
            raise ConfigurationError("security_key: each key must be text or bytes")
        key = key.strip()
        if key:
            keys.append(key)
    return Signer(keys) if keys else None


def unwrap(data: bytes) -> tuple[bytes, bytes | None]:
    """An enveloped or bare body -> (body, signature or None)."""
    if data[:1] == ENVELOPE and len(data) > SIG_LEN:
        return data[1 + SIG_LEN:], data[1:1 + SIG_LEN]
    return data, None

"""engine.signing: the HMAC of a body, key lists, envelopes, and signed control commands."""

import hashlib
import hmac

import pytest

from engine import control, signing
from engine.exceptions import ConfigurationError


def test_signature_is_lower_case_hex_hmac_sha256_of_the_exact_body():
    signer = signing.Signer([b"k1"])
    body = b"\x86\xa1v\x01any bytes"
    assert signer.sign(body) == hmac.new(b"k1", body, hashlib.sha256).hexdigest().encode()
    assert signer.verify(body, signer.sign(body))
    assert signer.verify(body, signer.sign(body).decode())   # str as well as bytes
    assert not signer.verify(body + b"x", signer.sign(body))
    assert not signer.verify(body, None)
    assert not signer.verify(body, b"00" * 32)
    assert not signer.verify(body, signer.sign(body).upper())


@pytest.mark.parametrize("key", [b"k", b"x" * 64, b"y" * 65, b"\xff" * 200])
def test_signature_matches_the_standard_hmac_for_short_and_long_keys(key):
    body = bytes(range(256)) * 3
    assert signing.Signer([key]).sign(body) == hmac.new(key, body, hashlib.sha256).hexdigest().encode()


def test_first_key_signs_and_every_key_verifies():
    new_then_old = signing.from_setting("new, old")
    old = signing.from_setting("old")
    body = b"body"
    assert new_then_old.sign(body) == signing.from_setting("new").sign(body)
    assert new_then_old.verify(body, old.sign(body))
    assert not old.verify(body, new_then_old.sign(body))


@pytest.mark.parametrize("value", [None, "", [], " , "])
def test_no_key_means_no_signer(value):
    assert signing.from_setting(value) is None


def test_keys_as_a_list_of_text_or_bytes():
    signer = signing.from_setting(["a", b"b"])
    assert signer.keys == (b"a", b"b")


def test_a_setting_of_another_type_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="security_key"):
        signing.from_setting(42)


def test_envelope_round_trip_and_bare_bodies_pass_through():
    signer = signing.Signer([b"k"])
    body = b"\x85\xa2idmsgpack map"
    wrapped = signer.wrap(body)
    assert wrapped[:1] == b"S" and len(wrapped) == 1 + 64 + len(body)
    assert signing.unwrap(wrapped) == (body, signer.sign(body))
    assert signing.unwrap(body) == (body, None)


def test_control_commands_are_refused_unsigned_or_forged_when_a_key_is_set():
    signer = signing.Signer([b"k"])
    command = {"cmd": "ping", "reply_to": None}
    assert control.decode(control.encode(command, signer), signer) == command
    # a worker without a key reads signed and unsigned commands alike
    assert control.decode(control.encode(command, signer)) == command
    assert control.decode(control.encode(command)) == command
    with pytest.raises(control.Refused, match="unsigned"):
        control.decode(control.encode(command), signer)
    with pytest.raises(control.Refused, match="bad signature"):
        control.decode(control.encode(command, signing.Signer([b"other"])), signer)


def test_security_key_is_read_from_the_environment(monkeypatch):
    from engine.config import Config
    monkeypatch.setenv("ENGINE_SECURITY_KEY", "a,b")
    assert Config().security_key == "a,b"

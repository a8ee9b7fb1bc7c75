"""Known-answer tests for the WireGuard primitives (BLAKE2s, HMAC/KDF, X25519, AEADs, TAI64N)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from engine.wg import crypto
from engine.wg.crypto import AuthenticationError, DHError, PrivateKey, PublicKey


def test_blake2s_rfc7693_abc():
    # https://www.rfc-editor.org/rfc/rfc7693#appendix-B
    assert crypto.hash_(b"abc").hex() == "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
    assert crypto.hash_(b"a", b"bc") == crypto.hash_(b"abc")


def test_mac_is_keyed_blake2s_128():
    key = bytes(range(32))
    assert crypto.mac(key, b"x") == hashlib.blake2s(b"x", key=key, digest_size=16).digest()
    assert len(crypto.mac(key, b"")) == 16


def _hmac_reference(key: bytes, data: bytes) -> bytes:
    # RFC 2104 by hand with a 64-byte block
    k = key.ljust(64, b"\0") if len(key) <= 64 else hashlib.blake2s(key).digest().ljust(64, b"\0")
    inner = hashlib.blake2s(bytes(b ^ 0x36 for b in k) + data).digest()
    return hashlib.blake2s(bytes(b ^ 0x5C for b in k) + inner).digest()


def test_hmac_blake2s_matches_rfc2104():
    for key in (b"", b"k" * 32, b"q" * 64):
        assert crypto.hmac_blake2s(key, b"data") == _hmac_reference(key, b"data")


def test_kdf_chain():
    ck, ikm = bytes(range(32)), b"input key material"
    t0 = _hmac_reference(ck, ikm)
    t1 = _hmac_reference(t0, b"\x01")
    t2 = _hmac_reference(t0, t1 + b"\x02")
    t3 = _hmac_reference(t0, t2 + b"\x03")
    assert crypto.kdf1(ck, ikm) == t1
    assert crypto.kdf2(ck, ikm) == (t1, t2)
    assert crypto.kdf3(ck, ikm) == (t1, t2, t3)


def test_x25519_rfc7748_section_6_1():
    # https://www.rfc-editor.org/rfc/rfc7748#section-6.1
    a = PrivateKey(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    b = PrivateKey(bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert a.public().hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert b.public().hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert a.exchange(b.public()).hex() == shared == b.exchange(a.public()).hex()


def test_x25519_low_order_point_is_refused():
    a = PrivateKey(bytes(range(32)))
    with pytest.raises(DHError):
        a.exchange(bytes(32))
    with pytest.raises(DHError):
        a.exchange(bytes([1]) + bytes(31))


def test_chacha20poly1305_rfc8439_2_8_2():
    # https://www.rfc-editor.org/rfc/rfc8439#section-2.8.2 (nonce 07000000 40414243 44454647)
    key = bytes(range(0x80, 0xA0))
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    pt = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
        b"for the future, sunscreen would be it."
    )
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    ct = ChaCha20Poly1305(key).encrypt(bytes.fromhex("070000004041424344454647"), pt, aad)
    assert ct[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    # our nonce layout: 4 zero bytes then the counter little-endian
    assert crypto.nonce(0x0102030405060708) == bytes(4) + bytes.fromhex("0807060504030201")
    ct2 = crypto.aead_encrypt(key, 5, pt, aad)
    assert crypto.aead_decrypt(key, 5, ct2, aad) == pt
    with pytest.raises(AuthenticationError):
        crypto.aead_decrypt(key, 6, ct2, aad)


def test_xchacha20poly1305_roundtrip_and_tamper():
    key, nonce = bytes(range(32)), bytes(range(24))
    ct = crypto.xaead_encrypt(key, nonce, b"cookie-16-bytes!", b"ad")
    assert len(ct) == 32
    assert crypto.xaead_decrypt(key, nonce, ct, b"ad") == b"cookie-16-bytes!"
    with pytest.raises(AuthenticationError):
        crypto.xaead_decrypt(key, nonce, ct, b"AD")


def test_tai64n_layout_and_order():
    stamp = crypto.tai64n(1_700_000_000.5)
    assert len(stamp) == 12
    assert stamp[:8] == (0x400000000000000A + 1_700_000_000).to_bytes(8, "big")
    nanos = int.from_bytes(stamp[8:], "big")
    assert nanos & 0xFFFFFF == 0 and abs(nanos - 500_000_000) < 1 << 24
    assert crypto.tai64n(1_700_000_001.0) > stamp
    assert abs(crypto.tai64n_to_unix(stamp) - 1_700_000_000.5) < 0.02


def test_private_key_never_shows_bytes():
    raw = bytes(range(32))
    k = PrivateKey(raw)
    for text in (repr(k), str(k), f"{k}"):
        assert raw.hex() not in text and k.public().hex() not in text
        assert k.public().short() in text
    assert isinstance(k.public(), PublicKey)
    assert PrivateKey(raw) == k and hmac.compare_digest(k.raw(), raw)

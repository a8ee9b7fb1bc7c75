"""Sans-IO ts2021 Noise IK handshake and transport records (Tailscale control protocol).

Protocol flow (Noise_IK_25519_ChaChaPoly_BLAKE2s, tailscale control/controlbase):

    prologue = "Tailscale Control Protocol v<version>";  <- s (server static, from GET /key)
    client -> server  initiation (101 B):  e, es, s, ss     (payload empty)
    server -> client  response   (51 B):   e, ee, se        (payload empty)
    split: client sends with k1, receives with k2

Initiation layout::

    2b protocol version BE | 1b type 0x01 | 2b length BE (=96) | 32b e | 48b enc(s) | 16b tag

Response layout::

    1b type 0x02 | 2b length BE (=48) | 32b e | 16b tag

Error frame (server instead of a response)::

    1b type 0x03 | 2b length BE | UTF-8 text (unauthenticated)

Transport record::

    1b type 0x04 | 2b length BE | ChaCha20-Poly1305 ciphertext (empty AD)

with at most MAX_FRAME_SIZE bytes per record including the header, and a 12-byte nonce of
4 zero bytes + a 64-bit **big-endian** counter (standard Noise uses little-endian; they agree
only for the first message). A failed decryption is fatal to the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from engine.types.keys import MachinePrivate, MachinePublic

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE_PREFIX = "Tailscale Control Protocol v"

MSG_TYPE_INITIATION = 0x01
MSG_TYPE_RESPONSE = 0x02
MSG_TYPE_ERROR = 0x03
MSG_TYPE_RECORD = 0x04

HEADER_LEN = 3  # type + 2-byte BE length (the initiation adds a 2-byte version in front)
INITIATION_PAYLOAD_LEN = 32 + 48 + 16
INITIATION_LEN = 2 + HEADER_LEN + INITIATION_PAYLOAD_LEN  # 101
RESPONSE_PAYLOAD_LEN = 32 + 16
RESPONSE_LEN = HEADER_LEN + RESPONSE_PAYLOAD_LEN  # 51
TAG_LEN = 16
MAX_FRAME_SIZE = 4096  # bytes per record including the 3-byte header
MAX_CIPHERTEXT_SIZE = MAX_FRAME_SIZE - HEADER_LEN  # 4093
MAX_PLAINTEXT_SIZE = MAX_CIPHERTEXT_SIZE - TAG_LEN  # 4077
MAX_NONCE = 2**64 - 1  # invalid counter value (Go: "nonce exhausted")


class NoiseError(ValueError):
    """Base class for Noise handshake/record errors."""


class RemoteProtocolError(NoiseError):
    """The peer sent something malformed or unauthenticated."""


class ServerError(NoiseError):
    """The server answered the initiation with an error frame (0x03)."""


class LocalProtocolError(NoiseError):
    """We misused the API (e.g. wrote after close)."""


# --- symmetric primitives -------------------------------------------------------------


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def _hkdf2(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise HKDF with two outputs (HMAC-BLAKE2s)."""
    temp = _hmac(ck, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    return out1, out2


def nonce_be(counter: int) -> bytes:
    """12-byte ChaCha20-Poly1305 nonce: 4 zero bytes + 64-bit big-endian counter (controlbase)."""
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


class _Symmetric:
    """Noise SymmetricState; every MixKey key is used exactly once with nonce 0."""

    __slots__ = ("h", "ck", "k")

    def __init__(self) -> None:
        # name is longer than HASHLEN (32), so h = HASH(name)
        self.h = _hash(PROTOCOL_NAME)
        self.ck = self.h
        self.k: bytes | None = None

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _hkdf2(self.ck, ikm)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None
        ct = ChaCha20Poly1305(self.k).encrypt(nonce_be(0), plaintext, self.h)
        self.k = None  # single use
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.k is not None
        try:
            pt = ChaCha20Poly1305(self.k).decrypt(nonce_be(0), ciphertext, self.h)
        except InvalidTag as e:
            raise RemoteProtocolError("handshake: decryption failed") from e
        self.k = None
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        return _hkdf2(self.ck, b"")


def _prologue(version: int) -> bytes:
    return (PROLOGUE_PREFIX + str(version)).encode()


def _dh(priv: MachinePrivate, pub: bytes) -> bytes:
    out = priv.shared(MachinePublic(pub))
    if out == bytes(32):
        raise RemoteProtocolError("handshake: low-order public key")
    return out


# --- handshake ------------------------------------------------------------------------


class ClientHandshake:
    """Initiator side: build the initiation, then consume the server's response.

    >>> hs = ClientHandshake(machine_key, control_key, version=130)
    >>> sock.send(hs.initiation)
    >>> conn = hs.receive_response(first_51_bytes)   # -> NoiseConn, or raises
    """

    def __init__(
        self,
        machine_key: MachinePrivate,
        control_key: MachinePublic,
        version: int,
        *,
        ephemeral: MachinePrivate | None = None,
    ) -> None:
        if not 0 <= version <= 0xFFFF:
            raise LocalProtocolError(f"protocol version {version} out of uint16 range")
        if control_key.is_zero():
            raise LocalProtocolError("control server key is zero")
        self.version = version
        self._s = machine_key
        self._rs = control_key
        self._e = ephemeral or MachinePrivate.generate()
        self._sym = _Symmetric()
        self._sym.mix_hash(_prologue(version))
        self._sym.mix_hash(control_key.raw)  # <- s
        self._done = False
        # -> e
        e_pub = self._e.public().raw
        self._sym.mix_hash(e_pub)
        # -> es
        self._sym.mix_key(_dh(self._e, control_key.raw))
        # -> s
        enc_s = self._sym.encrypt_and_hash(machine_key.public().raw)
        # -> ss
        self._sym.mix_key(_dh(self._s, control_key.raw))
        tag = self._sym.encrypt_and_hash(b"")
        payload = e_pub + enc_s + tag
        self.initiation = struct.pack(">HBH", version, MSG_TYPE_INITIATION, len(payload)) + payload
        assert len(self.initiation) == INITIATION_LEN

    @staticmethod
    def needed(buf: bytes) -> int:
        """How many bytes of server reply are needed before receive_response can decide (>=3)."""
        if len(buf) < HEADER_LEN:
            return HEADER_LEN
        if buf[0] == MSG_TYPE_ERROR:
            length: int = struct.unpack(">H", buf[1:3])[0]
            return HEADER_LEN + length
        return RESPONSE_LEN

    def receive_response(self, data: bytes) -> "NoiseConn":
        """Consume exactly the response (51 B) or an error frame; returns the transport."""
        if self._done:
            raise LocalProtocolError("handshake already completed")
        if len(data) < HEADER_LEN:
            raise RemoteProtocolError(f"handshake response: short header ({len(data)} bytes)")
        typ, length = data[0], struct.unpack(">H", data[1:3])[0]
        if typ == MSG_TYPE_ERROR:
            text = bytes(data[3 : 3 + length]).decode("utf-8", "replace")
            raise ServerError(f"server error: {text}")
        if typ != MSG_TYPE_RESPONSE:
            raise RemoteProtocolError(f"handshake response: unexpected message type 0x{typ:02x}")
        if length != RESPONSE_PAYLOAD_LEN or len(data) != RESPONSE_LEN:
            raise RemoteProtocolError(
                f"handshake response: wrong length {length} (frame {len(data)} bytes), want {RESPONSE_PAYLOAD_LEN}"
            )
        re_pub, tag = bytes(data[3:35]), bytes(data[35:51])
        sym = self._sym
        sym.mix_hash(re_pub)  # <- e
        sym.mix_key(_dh(self._e, re_pub))  # <- ee
        sym.mix_key(_dh(self._s, re_pub))  # <- se
        sym.decrypt_and_hash(tag)  # empty payload
        k1, k2 = sym.split()
        self._done = True
        return NoiseConn(send_key=k1, recv_key=k2, handshake_hash=sym.h, peer=self._rs, version=self.version)


class ServerHandshake:
    """Responder side (tests and a Python test-control server): consume initiation, produce response."""

    def __init__(
        self, control_key: MachinePrivate, *, ephemeral: MachinePrivate | None = None, min_version: int = 0
    ) -> None:
        self._s = control_key
        self._e = ephemeral or MachinePrivate.generate()
        self._min_version = min_version

    def accept(self, initiation: bytes) -> tuple[bytes, "NoiseConn", MachinePublic]:
        """Returns (response bytes, server-side NoiseConn, client machine key)."""
        if len(initiation) != INITIATION_LEN:
            raise RemoteProtocolError(f"initiation: wrong length {len(initiation)}, want {INITIATION_LEN}")
        version, typ, length = struct.unpack(">HBH", initiation[:5])
        if typ != MSG_TYPE_INITIATION:
            raise RemoteProtocolError(f"initiation: unexpected message type 0x{typ:02x}")
        if length != INITIATION_PAYLOAD_LEN:
            raise RemoteProtocolError(f"initiation: wrong payload length {length}")
        if version < self._min_version:
            raise RemoteProtocolError(f"initiation: unsupported version {version}")
        sym = _Symmetric()
        sym.mix_hash(_prologue(version))
        sym.mix_hash(self._s.public().raw)
        re_pub = initiation[5:37]
        sym.mix_hash(re_pub)
        sym.mix_key(_dh(self._s, re_pub))  # es
        rs_pub = sym.decrypt_and_hash(initiation[37:85])  # s
        sym.mix_key(_dh(self._s, rs_pub))  # ss
        sym.decrypt_and_hash(initiation[85:101])
        e_pub = self._e.public().raw
        sym.mix_hash(e_pub)
        sym.mix_key(_dh(self._e, re_pub))  # ee
        sym.mix_key(_dh(self._e, rs_pub))  # se
        tag = sym.encrypt_and_hash(b"")
        resp = struct.pack(">BH", MSG_TYPE_RESPONSE, RESPONSE_PAYLOAD_LEN) + e_pub + tag
        k1, k2 = sym.split()
        peer = MachinePublic(rs_pub)
        return resp, NoiseConn(send_key=k2, recv_key=k1, handshake_hash=sym.h, peer=peer, version=version), peer


def error_frame(text: str) -> bytes:
    body = text.encode()[:0xFFFF]
    return struct.pack(">BH", MSG_TYPE_ERROR, len(body)) + body


# --- transport ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One transport record: 1b type 0x04 | 2b BE length | ciphertext."""

    ciphertext: bytes

    def marshal(self) -> bytes:
        return struct.pack(">BH", MSG_TYPE_RECORD, len(self.ciphertext)) + self.ciphertext


class NoiseConn:
    """Sans-IO transport: encrypt() splits writes into records; receive_data() yields plaintext.

    Decryption failure or a malformed record puts the connection in a failed state
    (``failed`` holds the reason) and all later input is ignored; it never raises on peer input.
    """

    def __init__(
        self, *, send_key: bytes, recv_key: bytes, handshake_hash: bytes, peer: MachinePublic, version: int
    ) -> None:
        self._tx = ChaCha20Poly1305(send_key)
        self._rx = ChaCha20Poly1305(recv_key)
        self._tx_n = 0
        self._rx_n = 0
        self._buf = bytearray()
        self.handshake_hash = handshake_hash
        self.peer = peer
        self.version = version
        self.failed: str | None = None
        self.records_in = 0
        self.records_out = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        """Wire bytes for ``plaintext``, split into records of at most MAX_FRAME_SIZE."""
        if self.failed:
            raise LocalProtocolError(f"connection failed: {self.failed}")
        out = bytearray()
        view = memoryview(plaintext)
        while True:
            chunk = view[:MAX_PLAINTEXT_SIZE]
            view = view[MAX_PLAINTEXT_SIZE:]
            if self._tx_n >= MAX_NONCE:
                raise LocalProtocolError("send nonce exhausted")
            ct = self._tx.encrypt(nonce_be(self._tx_n), bytes(chunk), None)
            self._tx_n += 1
            out += struct.pack(">BH", MSG_TYPE_RECORD, len(ct))
            out += ct
            self.records_out += 1
            if not view:
                break
        return bytes(out)

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self._buf.clear()

    def receive_data(self, data: bytes) -> bytes:
        """Feed wire bytes; returns the plaintext of all complete records (b"" if none)."""
        if self.failed:
            return b""
        self._buf += data
        out = bytearray()
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_LEN:
            typ = buf[pos]
            length = (buf[pos + 1] << 8) | buf[pos + 2]
            if typ != MSG_TYPE_RECORD:
                self._fail(f"unexpected record type 0x{typ:02x}")
                return bytes(out)
            if length > MAX_CIPHERTEXT_SIZE:
                self._fail(f"record too large: {length} bytes (max {MAX_CIPHERTEXT_SIZE})")
                return bytes(out)
            if length < TAG_LEN:
                self._fail(f"record too short: {length} bytes")
                return bytes(out)
            if len(buf) - pos - HEADER_LEN < length:
                break
            ct = bytes(buf[pos + HEADER_LEN : pos + HEADER_LEN + length])
            if self._rx_n >= MAX_NONCE:
                self._fail("receive nonce exhausted")
                return bytes(out)
            try:
                pt = self._rx.decrypt(nonce_be(self._rx_n), ct, None)
            except InvalidTag:
                self._fail("record decryption failed")
                return bytes(out)
            self._rx_n += 1
            self.records_in += 1
            out += pt
            pos += HEADER_LEN + length
        del buf[:pos]
        return bytes(out)


def random_ephemeral() -> MachinePrivate:
    return MachinePrivate(os.urandom(32))

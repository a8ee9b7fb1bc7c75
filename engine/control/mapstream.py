"""Sans-IO map-stream framing: uint32 little-endian length prefix + (zstd frame of) JSON MapResponse.

Layout of each message on the /machine/map response body (control/controlclient/direct.go,
hs:hscontrol/poll.go writeMap)::

    4b length LE | length bytes: zstd frame of JSON   (Compress:"zstd")
                                 or plain JSON         (no compression)
"""

from __future__ import annotations

import json
import struct

import zstandard

from engine.tailcfg import MapResponse, WireError, decode

LENGTH_PREFIX = 4
MAX_MESSAGE_SIZE = 64 << 20  # bytes on the wire per message; protects memory
MAX_DECOMPRESSED_SIZE = 256 << 20


class MapStreamError(ValueError):
    """The control server sent a malformed map message (the stream must be restarted)."""


class MapFramer:
    """feed(bytes) -> list of decoded JSON payloads (bytes); raises MapStreamError on bad framing."""

    def __init__(self, *, compressed: bool = True, max_message: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._compressed = compressed
        self._max = max_message
        self._dctx = zstandard.ZstdDecompressor() if compressed else None
        self.messages = 0
        self.wire_bytes = 0
        self.json_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= LENGTH_PREFIX:
            (n,) = struct.unpack_from("<I", buf, pos)
            if n > self._max:
                raise MapStreamError(f"map message too large: {n} bytes (max {self._max})")
            if len(buf) - pos - LENGTH_PREFIX < n:
                break
            body = bytes(buf[pos + LENGTH_PREFIX : pos + LENGTH_PREFIX + n])
            pos += LENGTH_PREFIX + n
            self.wire_bytes += LENGTH_PREFIX + n
            if self._dctx is not None:
                try:
                    # the decompressor allocates a declared content size up front: refuse a too-large claim first
                    if zstandard.frame_content_size(body) > MAX_DECOMPRESSED_SIZE:
                        raise MapStreamError(
                            f"map message: zstd frame declares more than {MAX_DECOMPRESSED_SIZE} bytes"
                        )
                    body = self._dctx.decompress(body, max_output_size=MAX_DECOMPRESSED_SIZE)
                except zstandard.ZstdError as e:
                    raise MapStreamError(f"map message: bad zstd frame: {e}") from None
            self.messages += 1
            self.json_bytes += len(body)
            out.append(body)
        del buf[:pos]
        return out


def parse_map_response(body: bytes) -> MapResponse:
    """JSON bytes -> MapResponse; MapStreamError names what was wrong."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise MapStreamError(f"map message: invalid JSON: {e}") from None
    try:
        return decode(MapResponse, obj)
    except WireError as e:
        raise MapStreamError(f"map message: {e}") from None


def frame_message(payload: bytes, *, compress: bool = True, level: int = 3) -> bytes:
    """Encode one message as the server does (for tests and benchmarks)."""
    if compress:
        payload = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(payload)
    return struct.pack("<I", len(payload)) + payload

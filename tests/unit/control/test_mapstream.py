"""Map stream framing: uint32 LE length, zstd frames, split delivery, bad input -> MapStreamError."""

import json
import struct

import pytest
import zstandard

from engine.control.mapstream import MapFramer, MapStreamError, frame_message, parse_map_response


def test_length_is_little_endian():
    w = frame_message(b'{"KeepAlive":true}', compress=False)
    assert w[:4] == struct.pack("<I", 18)


def test_zstd_frames_split_anywhere():
    msgs = [json.dumps({"KeepAlive": True}).encode(), json.dumps({"Node": {"ID": 7, "Name": "x."}}).encode()]
    wire = b"".join(frame_message(m) for m in msgs)
    for cut in range(len(wire) + 1):
        f = MapFramer()
        assert f.feed(wire[:cut]) + f.feed(wire[cut:]) == msgs


def test_zstd_without_content_size():
    payload = b'{"KeepAlive":true}'
    body = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
    assert MapFramer().feed(struct.pack("<I", len(body)) + body) == [payload]


def test_uncompressed():
    f = MapFramer(compressed=False)
    assert f.feed(frame_message(b"{}", compress=False)) == [b"{}"]


def test_oversized_rejected():
    with pytest.raises(MapStreamError, match="map message too large: 1048577 bytes"):
        MapFramer(max_message=1 << 20).feed(struct.pack("<I", (1 << 20) + 1))


def test_bad_zstd():
    with pytest.raises(MapStreamError, match="bad zstd frame"):
        MapFramer().feed(struct.pack("<I", 4) + b"abcd")


@pytest.mark.parametrize(
    "body,msg",
    [
        (b"{nope", "invalid JSON"),
        (b"[1]", "want object, got list"),
        (b'{"Node":{"ID":"x"}}', "MapResponse.Node.ID: want integer, got str"),
        (b'{"PeersRemoved":{"a":1}}', "MapResponse.PeersRemoved: want array"),
        (b'{"Node":{"Key":"mkey:' + b"00" * 32 + b'"}}', "MapResponse.Node.Key: NodePublic: missing prefix"),
    ],
)
def test_parse_errors_name_the_field(body, msg):
    with pytest.raises(MapStreamError, match=msg):
        parse_map_response(body)


def test_unknown_fields_and_case_insensitive():
    mr = parse_map_response(b'{"node":{"id":3,"FutureField":{"x":1}},"SomethingNew":[1,2]}')
    assert mr.node.id == 3

"""Fuzz: peer-supplied bytes never raise anything but the documented error types."""

import json

from hypothesis import given, settings, strategies as st

from engine.control.mapstream import MapFramer, MapStreamError, parse_map_response
from engine.control.noise import ClientHandshake, NoiseError, RemoteProtocolError, ServerHandshake
from engine.control.transport import EarlyPayloadParser
from engine.types.keys import MachinePrivate

SERVER, CLIENT = MachinePrivate.generate(), MachinePrivate.generate()


def _conn():
    hs = ClientHandshake(CLIENT, SERVER.public(), 130)
    resp, _, _ = ServerHandshake(SERVER).accept(hs.initiation)
    return hs.receive_response(resp)


@given(st.lists(st.binary(max_size=5000), max_size=5))
@settings(max_examples=200, deadline=None)
def test_noise_records_never_raise(chunks):
    c = _conn()
    for ch in chunks:
        assert isinstance(c.receive_data(ch), bytes)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_handshake_response_only_noise_errors(data):
    hs = ClientHandshake(CLIENT, SERVER.public(), 130)
    try:
        hs.receive_response(data)
    except NoiseError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_early_payload_only_protocol_errors(data):
    p = EarlyPayloadParser()
    try:
        p.feed(data)
    except RemoteProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=20,
)
FIELDS = [
    "Node",
    "Peers",
    "PeersChanged",
    "PeersRemoved",
    "PeersChangedPatch",
    "OnlineChange",
    "PeerSeenChange",
    "DNSConfig",
    "DERPMap",
    "PacketFilter",
    "PacketFilters",
    "UserProfiles",
    "Domain",
    "KeepAlive",
    "PingRequest",
]


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5))
@settings(max_examples=400, deadline=None)
def test_map_response_decode_only_map_stream_errors(doc):
    try:
        parse_map_response(json.dumps(doc).encode())
    except MapStreamError:
        pass


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_framer_only_map_stream_errors(data):
    try:
        for msg in MapFramer(max_message=1 << 16).feed(data):
            parse_map_response(msg)
    except MapStreamError:
        pass

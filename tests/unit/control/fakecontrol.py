"""A minimal in-process ts2021 control server on loopback (our Noise responder + h2 server), for pair tests.

Only what the pair tests need: /key, the /ts2021 upgrade, the early payload, and scripted
answers to /machine/register and /machine/map (the map stream sends what the test queues).
Misbehaviour knobs: ``mode`` = "ok" | "http400" | "eof" | "bad_record" | "hang_register" (register
requests are never answered). ``connections`` records (client port, request line) per TCP connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import h2.config
import h2.connection
import h2.events

from engine.control.mapstream import frame_message
from engine.control.noise import ServerHandshake
from engine.control.transport import encode_early_payload, parse_response_head
from engine.types.keys import ChallengePublic, MachinePrivate


class FakeControl:
    def __init__(self, mode: str = "ok", host: str = "127.0.0.1") -> None:
        self.key = MachinePrivate.generate()
        self.mode = mode
        self.host = host
        self.connections: list[tuple[int, str]] = []
        self.register_responses: list[dict] = []  # popped per register call; default authorized
        self.map_messages: asyncio.Queue = asyncio.Queue()  # dicts sent on the map stream
        self.requests: list[tuple[str, dict]] = []
        self.map_streams = 0
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    async def __aenter__(self) -> "FakeControl":
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for w in self._writers:
            w.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    def drop_connections(self) -> None:
        for w in self._writers:
            w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
            line = head.split(b"\r\n", 1)[0].decode()
            self.connections.append((writer.get_extra_info("peername")[1], line))
            if line.startswith("GET /key"):
                body = json.dumps({"publicKey": str(self.key.public())}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
                return
            headers = {}
            for hl in head.decode().split("\r\n")[1:]:
                k, _, v = hl.partition(":")
                headers[k.strip().lower()] = v.strip()
            if self.mode == "http400":
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            if self.mode == "eof":
                return
            init = base64.b64decode(headers["x-tailscale-handshake"])
            resp, conn, peer = ServerHandshake(self.key).accept(init)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\n"
                b"Connection: upgrade\r\n\r\n" + resp
            )
            writer.write(conn.encrypt(encode_early_payload({"nodeKeyChallenge": str(ChallengePublic(b"\x07" * 32))})))
            if self.mode == "bad_record":
                rec = bytearray(conn.encrypt(b"x" * 20))
                rec[-1] ^= 1
                writer.write(bytes(rec))
                await writer.drain()
                await asyncio.sleep(5)
                return
            await self._serve_h2(reader, writer, conn)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve_h2(self, reader, writer, noise) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        h2c.initiate_connection()
        streams: dict[int, dict] = {}
        tasks: set[asyncio.Task] = set()

        def flush():
            data = h2c.data_to_send()
            if data:
                writer.write(noise.encrypt(data))

        flush()

        async def map_stream(sid: int):
            h2c.send_headers(sid, [(":status", "200")])
            flush()
            while True:
                msg = await self.map_messages.get()
                if msg is None:
                    return  # go silent
                h2c.send_data(sid, frame_message(json.dumps(msg).encode()))
                flush()

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                pt = noise.receive_data(data)
                if noise.failed:
                    return
                for ev in h2c.receive_data(pt):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = {"headers": dict(ev.headers), "body": b""}
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id]["body"] += ev.data
                        h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        st = streams[ev.stream_id]
                        path = st["headers"][":path"]
                        body = json.loads(st["body"]) if st["body"] else {}
                        self.requests.append((path, body))
                        if path == "/machine/register" and self.mode == "hang_register":
                            pass  # never answered: the client is stuck mid-login
                        elif path == "/machine/register":
                            rr = (
                                self.register_responses.pop(0)
                                if self.register_responses
                                else {"MachineAuthorized": True, "Login": {"LoginName": "tester"}}
                            )
                            out = json.dumps(rr).encode()
                            h2c.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(out)))])
                            h2c.send_data(ev.stream_id, out, end_stream=True)
                        elif path == "/machine/map" and body.get("Stream"):
                            self.map_streams += 1
                            t = asyncio.ensure_future(map_stream(ev.stream_id))
                            tasks.add(t)
                        else:
                            h2c.send_headers(
                                ev.stream_id, [(":status", "200"), ("content-length", "0")], end_stream=True
                            )
                flush()
        finally:
            for t in tasks:
                t.cancel()


__all__ = ["FakeControl", "parse_response_head"]

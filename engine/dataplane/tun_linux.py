"""Linux TUN devices via /dev/net/tun (optionally with virtio_net_hdr offloads), plus a test fake.

The ``Tun`` interface the Device uses:

- ``name``, ``mtu``, ``vnet_hdr`` (True: every read/write starts with a 10-byte virtio_net_hdr
  and reads may return TCP super-packets of up to 64 KiB; see ``engine.dataplane.offload``)
- ``read_into(buf, block=True) -> int``: read one frame into ``buf``; returns its length,
  0 once the Tun is closed, -1 when ``block`` is False and nothing is waiting.
- ``write(parts) -> None``: write one frame given as a list of buffers (gathered, no copy).
- ``read_batch() -> list[bytes]`` / ``write_batch(frames)``: convenience wrappers.
- ``close()``: idempotent; unblocks readers and removes the device.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import select
import struct
import subprocess
import threading
from typing import Iterable, Protocol

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

VNET_HDR_LEN = 10
# The TUN driver drops (rather than queues) when its ring of tx_queue_len packets is full; TCP
# small queues let ~1 MB per flow wait there (~740 MTU packets), so the default 500 loses
# packets at line rate and TCP backs off (measured: ~4000 retransmits per 5 s at 800 Mbit/s).
TX_QUEUE_LEN = 5000


class Tun(Protocol):
    name: str
    mtu: int
    vnet_hdr: bool

    def read_into(self, buf: bytearray | memoryview, block: bool = True) -> int: ...
    def write(self, parts: list) -> None: ...
    def close(self) -> None: ...


class _Waker:
    """A pipe that makes a poll() return when the owner closes."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def wake(self) -> None:
        try:
            os.write(self.w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


class LinuxTun:
    """A TUN interface; create with ``LinuxTun.create(name, mtu=..., offload=True)``.

    With ``offload`` the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6),
    so the kernel hands us TCP super-packets (up to 64 KiB) and accepts coalesced ones.
    """

    def __init__(
        self, fd: int, name: str, mtu: int, vnet_hdr: bool, *, owns_link: bool = True, tso: bool = False
    ) -> None:
        self.fd = fd
        self.tso = tso  # reads may be TCP super-packets of up to 64 KiB
        self.name = name
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self._owns_link = owns_link
        self._waker = _Waker()
        self._closed = False
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._waker.r, select.POLLIN)
        os.set_blocking(fd, False)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        mtu: int = 1420,
        offload: bool = True,
        tso: bool = False,
        multi_queue: bool = False,
        addresses: Iterable[str] = (),
        up: bool = True,
        txqueuelen: int = TX_QUEUE_LEN,
    ) -> "LinuxTun":
        """Create (or attach to) TUN ``name``, set its MTU and addresses and bring it up.

        ``offload``: IFF_VNET_HDR, so we can write coalesced TCP super-packets (GRO towards the
        kernel). ``tso``: also TUNSETOFFLOAD(CSUM|TSO4|TSO6), so reads may be 64 KiB TCP
        super-packets that we segment ourselves; without it the kernel segments and checksums
        in C before handing us MTU-sized packets (cheaper for Python per packet).
        """
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
            vnet = False
            if offload:
                try:
                    ifr = struct.pack("16sH", name.encode(), flags | IFF_VNET_HDR)
                    res = fcntl.ioctl(fd, TUNSETIFF, ifr)
                    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                    fcntl.ioctl(fd, TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) if tso else 0)
                    vnet = True
                except OSError:
                    os.close(fd)
                    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
                    vnet = False
            if not vnet:
                ifr = struct.pack("16sH", name.encode(), flags)
                res = fcntl.ioctl(fd, TUNSETIFF, ifr)
            real = res[:16].split(b"\0", 1)[0].decode()
        except BaseException:
            os.close(fd)
            raise
        tun = cls(fd, real, mtu, vnet, tso=vnet and tso)
        try:
            _ip("link", "set", "dev", real, "mtu", str(mtu), "txqueuelen", str(txqueuelen))
            for addr in addresses:
                _ip("addr", "add", addr, "dev", real)
            if up:
                _ip("link", "set", "dev", real, "up")
        except BaseException:
            tun.close()
            raise
        return tun

    def set_mtu(self, mtu: int) -> None:
        _ip("link", "set", "dev", self.name, "mtu", str(mtu))
        self.mtu = mtu

    def read_into(self, buf: bytearray | memoryview, block: bool = True) -> int:
        fd = self.fd
        while True:
            try:
                return os.readv(fd, [buf])
            except BlockingIOError:
                if not block:
                    return -1
            except OSError as e:
                if self._closed or e.errno in (errno.EBADF, errno.EFAULT):
                    return 0
                raise
            if self._closed:
                return 0
            self._poll.poll()
            if self._closed:
                return 0

    def write(self, parts: list) -> None:
        try:
            os.writev(self.fd, parts)
        except BlockingIOError:
            # The TUN transmit queue is full: the kernel drops in that case too.
            raise
        except OSError:
            if self._closed:
                return
            raise

    def read_batch(self, bufsize: int = 65536 + VNET_HDR_LEN) -> list[bytes]:
        buf = bytearray(bufsize)
        n = self.read_into(buf)
        return [bytes(buf[:n])] if n else []

    def write_batch(self, frames: Iterable[bytes]) -> None:
        for f in frames:
            self.write([f])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._waker.wake()
        # Give blocked readers a moment to see the flag before the fd number is reused.
        try:
            os.close(self.fd)
        except OSError:
            pass
        self._waker.close()
        if self._owns_link:
            # A non-persistent TUN disappears with its last fd; make sure anyway.
            subprocess.run(["ip", "link", "del", "dev", self.name], capture_output=True)


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class ChannelTun:
    """An in-memory Tun for unit tests: ``inject(frame)`` is what the OS would send us,
    ``written`` (a queue) receives what the device writes. Raises unless MESH_TESTING=1."""

    def __init__(self, name: str = "chan0", *, mtu: int = 1420, vnet_hdr: bool = False) -> None:
        if os.environ.get("MESH_TESTING") != "1":
            raise RuntimeError("ChannelTun is a test fake; set MESH_TESTING=1")
        self.name = name
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self.tso = vnet_hdr  # a test may inject super-packets
        self._inbound: queue.Queue[bytes | None] = queue.Queue()
        self.written: queue.Queue[bytes] = queue.Queue()
        self._closed = threading.Event()

    def inject(self, frame: bytes) -> None:
        self._inbound.put(bytes(frame))

    def read_into(self, buf: bytearray | memoryview, block: bool = True) -> int:
        if self._closed.is_set():
            return 0
        if block:
            frame = self._inbound.get()
        else:
            try:
                frame = self._inbound.get_nowait()
            except queue.Empty:
                return -1
        if frame is None or self._closed.is_set():
            self._inbound.put(None)
            return 0
        n = min(len(frame), len(buf))
        buf[:n] = frame[:n]
        return n

    def write(self, parts: list) -> None:
        if not self._closed.is_set():
            self.written.put(b"".join(bytes(p) for p in parts))

    def read_batch(self) -> list[bytes]:
        buf = bytearray(65536 + VNET_HDR_LEN)
        n = self.read_into(buf)
        return [bytes(buf[:n])] if n else []

    def write_batch(self, frames: Iterable[bytes]) -> None:
        for f in frames:
            self.write([f])

    def get_written(self, timeout: float = 5.0) -> bytes:
        """The next frame the device wrote (raises queue.Empty after ``timeout``)."""
        return self.written.get(timeout=timeout)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._inbound.put(None)

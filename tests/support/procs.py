"""The processes of a local Ray / Serve deployment, read from Linux ``/proc`` (no psutil).

Used by the tests (no Ray process left behind, every server socket on loopback) and by the soak and
benchmark scripts (RSS / PSS of the whole deployment)."""

from __future__ import annotations

import os
import socket
import struct
import time


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(d))
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[19]) if st is not None else None


def alive(pid: int, started: int | None = None) -> bool:
    """``pid`` runs (not a zombie) and, if ``started`` is given, is the same process (no pid reuse)."""
    st = _stat(pid)
    return st is not None and st[0] != "Z" and (started is None or int(st[19]) == started)


def snapshot(pid: int) -> dict[int, int]:
    """``{pid: start time}`` of ``pid``'s descendants (to check later that all of them are gone)."""
    return {p: t for p in descendants(pid) if (t := start_time(p)) is not None}


def wait_gone(procs: dict[int, int], timeout: float = 30.0) -> list[int]:
    """Wait until every process of a :func:`snapshot` has exited; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p, t in procs.items() if alive(p, t)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def memory_kb(pid: int) -> dict[str, int]:
    """``{"rss", "pss"}`` of one process in KiB (``smaps_rollup``); zeros if it is gone."""
    out = {"rss": 0, "pss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key = line.split(":")[0].lower()
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _addr(hex_addr: str, v6: bool) -> str:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if v6:
        words = struct.unpack("<4I", raw)
        packed = struct.pack(">4I", *words)
        return f"[{socket.inet_ntop(socket.AF_INET6, packed)}]:{int(port, 16)}"
    return f"{socket.inet_ntoa(struct.pack('<I', int(ip, 16)))}:{int(port, 16)}"


def listening(pids) -> dict[str, int]:
    """TCP sockets in LISTEN state owned by ``pids``: ``{"address:port": pid}``."""
    owner = {}
    for p in pids:
        for ino in _socket_inodes(p):
            owner[ino] = p
    found = {}
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[9]) in owner:
                found[_addr(parts[1], v6)] = owner[int(parts[9])]
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")

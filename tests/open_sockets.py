"""The TCP sockets this process holds open, from /proc (Linux): which ports each one joins, so a test can
tell that a call left none behind."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # the state column of /proc/net/tcp


@dataclass(frozen=True)
class OpenSocket:
    local_port: int
    remote_port: int
    listening: bool


def open_tcp_sockets(pid: int | str = "self") -> list[OpenSocket]:
    """Every TCP socket (IPv4 and IPv6) one of the process's file descriptors refers to."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since it was listed
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                found.append(OpenSocket(local, remote, fields[3] == LISTEN))
    return found


def sockets_on(port: int, pid: int | str = "self") -> list[OpenSocket]:
    """The process's connections (not listeners) to or from `port`."""
    return [sock for sock in open_tcp_sockets(pid) if not sock.listening and port in (sock.local_port, sock.remote_port)]

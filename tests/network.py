"""A second host on this machine: a network namespace joined to this one by a veth pair, and
a firewall inside it that can silently drop every packet (a real blackhole: the peer neither
answers nor refuses, as in a network partition).

Packets are dropped with nftables rules inside the namespace. `tc netem loss 100%` would do
the same, but this machine's kernel has no netem queueing discipline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib

_TABLE = "blackhole"


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str | None:
    """Why a namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    return None


class RemoteHost:
    """Namespace `name` at 10.213.N.2, reachable from here (10.213.N.1) over veth."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.name = f"svc-test-{tag}"
        self.link = f"vt{tag}"
        subnet = 1 + zlib.crc32(tag.encode()) % 250
        self.local_address = f"10.213.{subnet}.1"
        self.address = f"10.213.{subnet}.2"

    def create(self) -> RemoteHost:
        peer = f"{self.link}p"
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.link, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", self.name)
        _run("ip", "addr", "add", f"{self.local_address}/30", "dev", self.link)
        _run("ip", "link", "set", self.link, "up")
        inside = ("ip", "netns", "exec", self.name)
        _run(*inside, "ip", "addr", "add", f"{self.address}/30", "dev", peer)
        _run(*inside, "ip", "link", "set", peer, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        return self

    def drop_all_packets(self) -> None:
        """Every packet in or out of the namespace is dropped, without any answer."""
        rules = (
            f"add table inet {_TABLE}\n"
            f"add chain inet {_TABLE} in {{ type filter hook input priority 0; policy drop; }}\n"
            f"add chain inet {_TABLE} out {{ type filter hook output priority 0; policy drop; }}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.name, "nft", "-f", "-"],
            input=rules,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def deliver_packets(self) -> None:
        _run("ip", "netns", "exec", self.name, "nft", "delete", "table", "inet", _TABLE)

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.link], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

"""Which client pods TPROXY cannot capture: pods behind a Linux bridge with br_netfilter on.

With the `bridge` CNI plugin a pod's host-side veth is a port of a bridge (`cni0`), and the
node reaches the pod's IP through that bridge. When `net.bridge.bridge-nf-call-iptables` is 1
(kube-proxy needs it for Service traffic between pods on one bridge), the kernel runs the IPv4
prerouting hooks for bridged frames in bridge context and then orphans the packet before it
enters the IP stack: the socket assignment TPROXY made is lost, the SYN reaches INPUT and no
SYN-ACK ever comes back (seen on a real node, `real-node.md` section 7.2; routed veths such as
Calico's or the `ptp` plugin work). Capturing such a pod would cut its Service traffic, so the
node agent leaves it out of `@clients` (fail open) and says so.

`bridged_clients(clients, host)` is pure: for each client prefix, the longest-prefix route of
the main table gives the interface the node reaches it through; if that interface is a bridge,
or a port of one, and bridge-nf-call-iptables is on, the client is bridged. `read_host()` reads
the routes, links and the sysctl (in `netns` when given: the sysctl is per network namespace).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

BRIDGE_NF_SYSCTL = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@dataclass(frozen=True)
class Link:
    name: str
    kind: str = ""  # "bridge", "veth", ... (`ip -d link`: linkinfo.info_kind)
    master: str = ""  # the bridge (or bond, VRF) this link is enslaved to
    master_kind: str = ""  # linkinfo.info_slave_kind: "bridge" for a bridge port


@dataclass(frozen=True)
class HostNet:
    """What the decision needs from the node: main-table routes, links, the br_netfilter sysctl."""

    routes: tuple[tuple[ipaddress.IPv4Network, str], ...] = ()
    links: dict[str, Link] = field(default_factory=dict)
    bridge_nf_call_iptables: bool = False


class HostReadError(RuntimeError):
    """`ip` failed or printed something unexpected; the message says which command."""


def bridge_of(dev: str, links: dict[str, Link]) -> str | None:
    """The bridge `dev` is or belongs to, else None."""
    link = links.get(dev)
    if link is None:
        return None
    if link.kind == "bridge":
        return link.name
    if link.master_kind == "bridge" and link.master:
        return link.master
    return None


def route_dev(ip: ipaddress.IPv4Address,
              routes: Iterable[tuple[ipaddress.IPv4Network, str]]) -> str | None:
    """The device of the longest-prefix main-table route that covers `ip`."""
    best: tuple[int, str] | None = None
    for net, dev in routes:
        if ip in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, dev)
    return best[1] if best else None


def bridged_clients(clients: Iterable[str], host: HostNet) -> dict[str, str]:
    """Client prefixes (as in `tproxy.Selection.clients`) TPROXY cannot capture, mapped to the
    bridge they sit behind. Empty while bridge-nf-call-iptables is off."""
    if not host.bridge_nf_call_iptables:
        return {}
    out: dict[str, str] = {}
    for client in clients:
        net = ipaddress.IPv4Network(client, strict=False)
        dev = route_dev(net.network_address, host.routes)
        bridge = bridge_of(dev, host.links) if dev else None
        if bridge is not None:
            out[client] = bridge
    return out


def parse_routes(text: str) -> tuple[tuple[ipaddress.IPv4Network, str], ...]:
    """`ip -j -4 route show table main` -> ((prefix, dev), ...); routes without a device
    (blackhole, unreachable) are left out."""
    out = []
    for r in json.loads(text or "[]"):
        dev, dst = r.get("dev"), r.get("dst")
        if not dev or not dst or r.get("type", "unicast") != "unicast":
            continue
        out.append((ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else dst, strict=False),
                    str(dev)))
    return tuple(out)


def parse_links(text: str) -> dict[str, Link]:
    """`ip -j -d link show` -> {name: Link}."""
    out = {}
    for li in json.loads(text or "[]"):
        info = li.get("linkinfo") or {}
        name = str(li["ifname"])
        out[name] = Link(name, str(info.get("info_kind", "")), str(li.get("master", "")),
                         str(info.get("info_slave_kind", "")))
    return out


def _run(argv: list[str], netns: str | None) -> str:
    full = (["ip", "netns", "exec", netns] if netns else []) + argv
    res = subprocess.run(full, capture_output=True, text=True, check=False, timeout=10)
    if res.returncode != 0:
        raise HostReadError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res.stdout


def read_host(netns: str | None = None) -> HostNet:
    """Routes, links and bridge-nf-call-iptables of this node (or of `netns`). A missing sysctl
    (br_netfilter not loaded) counts as off."""
    try:
        routes = parse_routes(_run(["ip", "-j", "-4", "route", "show", "table", "main"], netns))
        links = parse_links(_run(["ip", "-j", "-d", "link", "show"], netns))
    except (ValueError, KeyError, TypeError) as e:
        raise HostReadError(f"unexpected `ip -j` output: {e}") from None
    if netns:
        res = subprocess.run(["ip", "netns", "exec", netns, "cat", BRIDGE_NF_SYSCTL],
                             capture_output=True, text=True, check=False, timeout=10)
        value = res.stdout.strip() if res.returncode == 0 else "0"
    else:
        try:
            with open(BRIDGE_NF_SYSCTL) as f:
                value = f.read().strip()
        except FileNotFoundError:
            value = "0"
    return HostNet(routes, links, value == "1")

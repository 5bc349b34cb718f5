"""The TPROXY capture rules: one nftables table of our own plus the policy route they need.

Packets from local clients (`clients`: pod addresses or prefixes on this node) to a selected
`(ip, port)` (a Service ClusterIP:port or one of its endpoints' IP:port) are handed to Envoy's
transparent listener on `tproxy_port`; packets of established proxied connections are
recognised by their transparent socket. The TCP NodePorts of the selected Services
(`nodeports`), dialled at one of this node's addresses by anyone, go to Envoy's second
listener on `tproxy_port + 1` the same way (Calico's `tproxy-nodeports-tcp`). Everything else
is left alone. Both carry the proxy
mark (OR-ed in, other bits untouched), which routes them to the local stack
(`ip rule fwmark MARK/MARK lookup TABLE` + `local 0.0.0.0/0 dev lo`).

The chains of the table (docs/capture.md has the packet walk):

- `raw_prerouting` / `raw_output` (priority raw, before conntrack): the captured flows,
  client -> service and client -> `<node>:<nodePort>`, and the proxy's replies (from Envoy's
  transparent sockets only), are `notrack`. Without this a kube-proxy in iptables mode DNATs the captured
  connection (nat prerouting runs after mangle) and the client's next packet no longer finds
  the connection Envoy accepted: Envoy's wildcard listener answers RST. Untracked packets skip
  every nat hook, so Envoy sees the ClusterIP as the original destination. Envoy's own
  upstream connection is a new, tracked flow, which kube-proxy balances as usual.
- `prerouting` (priority mangle): replies to Envoy's upstream connections (conntrack mark
  `upstream_mark`) get the proxy mark so they reach Envoy, not the client pod whose IP the
  upstream connection carries (Envoy `original_src`); Envoy's own upstream packets looped
  back to a local endpoint are left alone; `socket transparent 1` for established proxied
  connections; then the TPROXY rule for new ones.
- `output` (type route, priority mangle): Envoy's upstream sockets carry `upstream_mark`
  (SO_MARK), saved into conntrack; a local (host-network) endpoint's replies to them get the
  proxy mark and are re-routed to Envoy.
- `input` (port guard): a connection to `tproxy_port` whose destination is not a selected
  address, or to `tproxy_port + 1` at all, was not TPROXYed (someone dialled `<node>:<tproxyPort>` directly) and is reset, so
  Envoy's transparent listener cannot be used as an open proxy into the cluster.
- `forward` (leak guard): a captured packet that reaches the forward hook missed the TPROXY
  path (policy route gone, for instance). Being untracked it was not DNATed either, so it would
  leave the node with a ClusterIP as destination; it is reset instead.

The two guards count what they reset (`counters()`); the counts restart with every apply.

`render()` is pure; `apply()` replaces the whole table in one nft transaction (atomic: a
packet sees either the old rules or the new ones); `remove()` deletes it (fail open: the
guards go with it). IPv4 and IPv6: one `inet` table, each address rule once per family
(sets `services`/`clients` and `services6`/`clients6`), and a policy route per family.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

from l7scope.contracts import nodeconfig

DEFAULT_TABLE = "l7scope"
DEFAULT_MARK = nodeconfig.DEFAULT_TPROXY_MARK
"""Bit 12: clear of Felix's 0xffff0000 and kube-proxy's 0x4000/0x8000 (contracts.nodeconfig
checks a configured `tproxyMark`)."""
DEFAULT_UPSTREAM_MARK = nodeconfig.DEFAULT_TPROXY_UPSTREAM_CONN_MARK
"""Bit 13: the mark Envoy puts on its upstream sockets (`original_src`), node setting
`tproxyUpstreamConnMark`."""
DEFAULT_ROUTE_TABLE = 16001
DEFAULT_TPROXY_PORT = nodeconfig.DEFAULT_TPROXY_PORT


@dataclass(frozen=True)
class Selection:
    """What to capture: destination addresses and the clients whose connections are proxied."""

    services: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    clients: frozenset[str] = field(default_factory=frozenset)  # IPs or CIDR prefixes
    nodeports: frozenset[int] = field(default_factory=frozenset)  # annotated Services' NodePorts

    @staticmethod
    def of(services: Iterable[tuple[str, int]], clients: Iterable[str],
           nodeports: Iterable[int] = ()) -> Selection:
        svc = frozenset((str(ipaddress.ip_address(ip)), int(port)) for ip, port in services)
        nps = frozenset(int(p) for p in nodeports)
        for port in [*(p for _, p in svc), *nps]:
            if not 0 < port < 65536:
                raise ValueError(f"port out of range: {port}")
        cl = frozenset(str(ipaddress.ip_network(c, strict=False)) for c in clients)
        return Selection(svc, cl, nps)


@dataclass(frozen=True)
class Rules:
    table: str = DEFAULT_TABLE
    tproxy_port: int = DEFAULT_TPROXY_PORT
    mark: int = DEFAULT_MARK
    route_table: int = DEFAULT_ROUTE_TABLE
    upstream_mark: int = DEFAULT_UPSTREAM_MARK

    @property
    def nodeport_port(self) -> int:
        """Envoy's NodePort listener: `tproxyPort + 1`, as in Calico."""
        return self.tproxy_port + 1


class CaptureError(RuntimeError):
    """nft or ip failed; the message carries the tool's own error text."""


FORWARD_GUARD = "forward_guard"
PORT_GUARD = "port_guard"


FAMILIES = (("ip", "ipv4_addr", ""), ("ip6", "ipv6_addr", "6"))
"""(nft protocol, set element type, set name suffix) for IPv4 and IPv6."""


def _version(addr: str) -> int:
    return ipaddress.ip_network(addr, strict=False).version


def render(sel: Selection, rules: Rules = Rules()) -> str:
    """The nft script that (re)creates our table with this selection, as one transaction.
    One `inet` table: every address rule exists for `ip` and for `ip6` (sets `services`,
    `clients` and `services6`, `clients6`); the NodePort rules match both families."""
    nodeports = ", ".join(str(p) for p in sorted(sel.nodeports))
    mark, upstream = f"0x{rules.mark:x}", f"0x{rules.upstream_mark:x}"
    set_mark = f"meta mark set meta mark | {mark}"
    # A NodePort of a selected Service, dialled at one of this node's addresses from anywhere
    # but the node's own loopback; and the proxy's replies to such connections.
    np_captured = 'iif != "lo" meta l4proto tcp tcp dport @nodeports fib daddr type local'
    np_replies = "meta l4proto tcp tcp sport @nodeports fib saddr type local"

    sets: list[str] = []
    captured: list[str] = []
    replies: list[str] = []
    guard: list[str] = []
    for proto, addr_type, sfx in FAMILIES:
        v = 4 if proto == "ip" else 6
        services = ", ".join(f"{ip} . {port}" for ip, port in sorted(sel.services)
                             if _version(ip) == v)
        clients = ", ".join(sorted(c for c in sel.clients if _version(c) == v))
        sets += [f"  set services{sfx} {{",
                 f"    type {addr_type} . inet_service",
                 *([f"    elements = {{ {services} }}"] if services else []),
                 "  }",
                 f"  set clients{sfx} {{",
                 f"    type {addr_type}",
                 "    flags interval",
                 *([f"    elements = {{ {clients} }}"] if clients else []),
                 "  }"]
        captured.append(f"meta l4proto tcp {proto} saddr @clients{sfx}"
                        f" {proto} daddr . tcp dport @services{sfx}")
        replies.append(f"meta l4proto tcp {proto} daddr @clients{sfx}"
                       f" {proto} saddr . tcp sport @services{sfx}")
        guard.append(f"tcp dport {rules.tproxy_port} {proto} daddr . tcp dport != @services{sfx}"
                     f' counter name "{PORT_GUARD}" reject with tcp reset')

    def chain(name: str, hook: str, priority: str, *body: str, type_: str = "filter") -> list[str]:
        return [f"  chain {name} {{",
                f"    type {type_} hook {hook} priority {priority}; policy accept;",
                *(f"    {line}" for line in body), "  }"]

    lines = [
        # a previous version's IPv4-only table goes in the same transaction
        f"table ip {rules.table} {{}}",
        f"delete table ip {rules.table}",
        f"table inet {rules.table} {{}}",
        f"delete table inet {rules.table}",
        f"table inet {rules.table} {{",
        *sets,
        "  set nodeports {",
        "    type inet_service",
        *([f"    elements = {{ {nodeports} }}"] if nodeports else []),
        "  }",
        f"  counter {FORWARD_GUARD} {{}}",
        f"  counter {PORT_GUARD} {{}}",
        *chain("raw_prerouting", "prerouting", "raw", *(f"{c} notrack" for c in captured),
               f"{np_captured} notrack"),
        *chain("raw_output", "output", "raw",
               *(f"{r} socket transparent 1 notrack" for r in replies),
               f"{np_replies} socket transparent 1 notrack"),
        *chain("prerouting", "prerouting", "mangle",
               f"ct direction reply ct mark & {upstream} == {upstream} {set_mark} accept",
               f"ct mark & {upstream} == {upstream} accept",
               f"meta l4proto tcp socket transparent 1 {set_mark} accept",
               *(f"{c} {set_mark} tproxy {proto} to :{rules.tproxy_port} accept"
                 for c, (proto, _, _) in zip(captured, FAMILIES, strict=True)),
               f"{np_captured} {set_mark} tproxy to :{rules.nodeport_port} accept"),
        *chain("output", "output", "mangle",
               f"meta mark & {upstream} == {upstream} ct mark set ct mark | {upstream}",
               f"ct direction reply ct mark & {upstream} == {upstream} {set_mark}",
               type_="route"),
        *chain("input", "input", "filter", *guard,
               f'tcp dport {rules.nodeport_port} counter name "{PORT_GUARD}" reject with tcp reset'),
        *chain("forward", "forward", "filter",
               *(f'{c} counter name "{FORWARD_GUARD}" reject with tcp reset' for c in captured)),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], netns: str | None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] if netns else []) + cmd
    # its own process group: a terminal's Ctrl-C must not kill an nft halfway through a teardown
    return subprocess.run(full, input=stdin, capture_output=True, text=True, check=False,
                          process_group=0)


def apply(sel: Selection, rules: Rules = Rules(), netns: str | None = None) -> None:
    """Install or replace the table atomically, and make sure the policy routes exist (the
    IPv6 one is required when the selection has IPv6 addresses, else best effort: a node
    with IPv6 disabled still captures IPv4)."""
    res = _run(["nft", "-f", "-"], netns, render(sel, rules))
    if res.returncode != 0:
        raise CaptureError(f"nft failed: {res.stderr.strip()}")
    ensure_route(rules, netns)
    v6 = any(_version(ip) == 6 for ip, _ in sel.services) or any(
        _version(c) == 6 for c in sel.clients)
    try:
        ensure_route(rules, netns, family="-6")
    except CaptureError:
        if v6:
            raise


def remove(rules: Rules = Rules(), netns: str | None = None) -> None:
    """Delete the table and the policy routes; a missing table or route is not an error.
    Every fwmark rule that looks up our route table goes, whatever its mark: a previous
    version's (0x1000000, inside Felix's mask) or a changed `tproxyMark` leaves none behind.
    A previous version's IPv4-only `ip` table goes too."""
    _run(["nft", "delete", "table", "inet", rules.table], netns)
    _run(["nft", "delete", "table", "ip", rules.table], netns)
    for family in ("-4", "-6"):
        for pref, _ in policy_rules(rules, netns, family):
            _run(["ip", family, "rule", "del", "pref", str(pref)], netns)
        _run(["ip", family, "route", "flush", "table", str(rules.route_table)], netns)


def policy_rules(rules: Rules = Rules(), netns: str | None = None,
                 family: str = "-4") -> list[tuple[int, str]]:
    """(priority, "fwmark/mask") of each `ip rule` (`family` "-4" or "-6") with a fwmark
    that looks up our table."""
    res = _run(["ip", family, "-j", "rule", "show"], netns)
    if res.returncode != 0:
        return []
    out = []
    for r in json.loads(res.stdout or "[]"):
        if str(r.get("table")) == str(rules.route_table) and "fwmark" in r:
            mask = r.get("fwmask", "0xffffffff")
            out.append((int(r["priority"]), f"{int(r['fwmark'], 16):#x}/{int(mask, 16):#x}"))
    return out


def ensure_route(rules: Rules = Rules(), netns: str | None = None, family: str = "-4") -> None:
    """Exactly one fwmark rule for our table, with this mark, and the local route in it
    (`local 0.0.0.0/0` or, with family "-6", `local ::/0`)."""
    mark = f"0x{rules.mark:x}/0x{rules.mark:x}"
    keep = None
    for pref, fwmark in policy_rules(rules, netns, family):
        if fwmark == mark and keep is None:
            keep = pref
        else:  # another mark (an old version's, a changed tproxyMark) or a duplicate
            _run(["ip", family, "rule", "del", "pref", str(pref)], netns)
    if keep is None:
        res = _run(["ip", family, "rule", "add", "fwmark", mark, "lookup",
                    str(rules.route_table)], netns)
        if res.returncode != 0:
            raise CaptureError(f"ip {family} rule failed: {res.stderr.strip()}")
    res = _run(["ip", family, "route", "replace", "local",
                "0.0.0.0/0" if family == "-4" else "::/0", "dev", "lo",
                "table", str(rules.route_table)], netns)
    if res.returncode != 0:
        raise CaptureError(f"ip {family} route failed: {res.stderr.strip()}")


def installed(rules: Rules = Rules(), netns: str | None = None) -> Selection | None:
    """The selection currently installed, read back from the kernel; None when no table."""
    res = _run(["nft", "-j", "list", "table", "inet", rules.table], netns)
    if res.returncode != 0:
        return None

    services: set[tuple[str, int]] = set()
    clients: set[str] = set()
    nodeports: set[int] = set()
    for item in json.loads(res.stdout).get("nftables", []):
        s = item.get("set")
        if not s:
            continue
        for el in s.get("elem", []):
            if s["name"] == "nodeports":
                nodeports.add(int(el))
            elif s["name"] in ("services", "services6"):
                ip, port = el["concat"]
                services.add((ip, int(port)))
            elif s["name"] in ("clients", "clients6"):
                if isinstance(el, dict) and "prefix" in el:
                    clients.add(f"{el['prefix']['addr']}/{el['prefix']['len']}")
                elif isinstance(el, dict) and "range" in el:
                    lo, hi = el["range"]
                    for net in ipaddress.summarize_address_range(
                        ipaddress.ip_address(lo), ipaddress.ip_address(hi)
                    ):
                        clients.add(str(net))
                else:
                    clients.add(str(ipaddress.ip_network(el)))
    return Selection(frozenset(services), frozenset(clients), frozenset(nodeports))


def counters(rules: Rules = Rules(), netns: str | None = None) -> dict[str, int]:
    """Packets reset by each guard since the table was last applied ({} when no table)."""
    res = _run(["nft", "-j", "list", "counters", "table", "inet", rules.table], netns)
    if res.returncode != 0:
        return {}
    out: dict[str, int] = {}
    for item in json.loads(res.stdout).get("nftables", []):
        c = item.get("counter")
        if c and c.get("table") == rules.table:
            out[str(c["name"])] = int(c.get("packets", 0))
    return out

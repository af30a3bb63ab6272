# SPDX-License-Identifier: GPL-2.0-or-later
"""NAT with port chunks: dpoffloadd's tc rules source-NAT inner -> outer IPv4 through
conntrack (zone 1), chunk by chunk, with kernel forwarding off.

    fabric netns                      hv netns (the hypervisor, runs dpoffloadd)
    fab0  <------------ veth ------------>  p0   (clsact ingress: the daemon's rules)
    (scapy sends and captures)              +- p0.100  blue     inner  10.100.0.1/24 fd00:100::1/64
                                            +- p0.101  red      inner  10.101.0.1/24 fd00:101::1/64
                                            +- p0.200  transit  outer  10.200.0.1/24 fd00:200::1/64
                                            dpo-inject / dpo-punt (the daemon's punt pair)

Subscribers 10.100.0.2 and 10.100.0.3 sit on blue, 10.101.0.2 on red; the default routes
go via a gateway on VLAN 200; neighbours are static. The mapping's `nat` is small on
purpose: pool 198.51.100.0/30, ports 1024-2047, chunks of 512, at most 2 per subscriber
(they fit one address), 5 s idle, so the limit and the idle release are reachable here.

The kernel's forwarding is OFF (net.ipv4.ip_forward=0, net.ipv6.conf.all.forwarding=0):
a frame that comes back routed was routed by tc. "Not forwarded" is then true of the
kernel too, so every drop is also checked on the tc drop rule's counter.

The chunk limit is reached without 1024 real connections: conntrack entries are written
into zone 1 over ctnetlink with reply tuples inside the subscriber's chunk (what the
daemon counts), 512 per chunk.
"""

import calendar
import os
import re
import socket
import struct
import tempfile
import time

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import describe, ipv4_checksum_ok, parse_log_line, start_daemon, vlans

SCENARIO_MACS = {  # netdev -> its own MAC
    "p0.100": "02:dd:00:00:64:01",
    "p0.101": "02:dd:00:00:65:01",
    "p0.200": "02:dd:00:00:c8:01",
}
VLAN_MAC = {100: SCENARIO_MACS["p0.100"], 101: SCENARIO_MACS["p0.101"], 200: SCENARIO_MACS["p0.200"]}
SUB_A = "10.100.0.2"        # blue
SUB_B = "10.100.0.3"        # blue
SUB_R = "10.101.0.2"        # red
SUB_MAC = {SUB_A: "02:00:00:00:01:02", SUB_B: "02:00:00:00:01:03", SUB_R: "02:00:00:00:02:02",
           "fd00:100::2": "02:00:00:00:01:02"}
SUB_VLAN = {SUB_A: 100, SUB_B: 100, SUB_R: 101, "fd00:100::2": 100}
GW_MAC = "02:00:00:00:c8:fe"          # 10.200.0.254 / fd00:200::fe on transit
REMOTE = "203.0.113.9"                # a server outside
REMOTE2 = "203.0.113.10"
STRANGER = "203.0.113.66"             # sends what nobody asked for
FAKE_REMOTE = "203.0.113.200"         # the remote end of the ctnetlink-made connections

ZONE = 1
POOL = [f"198.51.100.{i}" for i in range(4)]
PORTS = (1024, 2047)
CHUNK_SIZE = 512
MAX_CHUNKS = 2
IDLE_S = 5

MAPPING = """{
  "uplink": "p0",
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100", "role": "inner", "vlan": 100 },
    { "name": "red",     "netdev": "p0.101", "role": "inner", "vlan": 101 },
    { "name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200 }
  ],
  "nat": { "zone": 1, "pool": ["198.51.100.0/30"], "ports": { "first": 1024, "last": 2047 },
           "chunk_size": 512, "max_chunks_per_subscriber": 2, "chunk_idle_seconds": 5 }
}
"""

START_TIMEOUT = 20.0    # daemon start to its first `reconciled` line (TCG is slow)
FIRST_TIMEOUT = 5.0     # a first packet (punted, chunk pulled, rule installed, put back) on the wire
ARRIVE_TIMEOUT = 5.0    # any other frame that must arrive
NOTHING_WINDOW = 1.0    # "nothing arrives"
LOG_TIMEOUT = 10.0      # a log line that must come (chunk pulled after its chunk filled, ...)
RULE_TIMEOUT = 5.0      # the rules follow a NAT state change
RELEASE_SLACK = 4.0     # idle release: within chunk_idle_seconds + this
CHAIN_OUTER = 0x200
CHAIN_OUTER_TRACKED = 0x201
CHAIN_ADJ_BASE = 0x1000
PUNT_INDEX = 0xd9200000


# ---------------------------------------------------------------- the daemon

def chunk(fields):
    """A chunk line's fields -> (subscriber, public, lo, hi)."""
    lo, _, hi = fields.get("ports", "0-0").partition("-")
    return fields.get("subscriber"), fields.get("public"), int(lo), int(hi or 0)


def chunk_lines(daemons):
    out = []
    for d in daemons:
        for line in d.lines():
            ev, fields = parse_log_line(line)
            if ev in ("chunk-allocated", "chunk-released"):
                out.append((d.tag, ev, fields, line.strip()))
    return out


# ---------------------------------------------------------------- tc

class TcRule:
    def __init__(self, block):
        lines = block.splitlines()
        head = lines[0]
        m = re.search(r"chain (\d+)", head)
        self.chain = int(m.group(1)) if m else 0
        m = re.search(r"pref (\d+)", head)
        self.pref = int(m.group(1)) if m else 0
        self.keys = {}
        for l in lines[1:]:
            km = re.match(r"\s+(vlan_id|vlan_ethtype|eth_type|ct_state|ct_zone|src_ip|dst_ip|ip_ttl|ip_proto) (\S+)", l)
            if km:
                self.keys[km.group(1)] = km.group(2)
        self.actions = [a.strip() for a in re.findall(r"action order \d+: (.*)", block)]
        m = re.search(r"Sent (\d+) bytes (\d+) pkt", block)
        self.pkts = int(m.group(2)) if m else 0
        self.block = block

    @property
    def drop(self):
        return bool(self.actions) and "gact action drop" in self.actions[0]

    @property
    def v6(self):
        return self.keys.get("vlan_ethtype") == "ipv6"

    def summary(self):
        keys = " ".join(f"{k} {v}" for k, v in self.keys.items() if k != "vlan_id")
        acts = "; ".join(re.sub(r"\s+", " ", a)[:70] for a in self.actions)
        return f"chain {self.chain:#x} pref {self.pref} {keys} -> {acts}: {self.pkts} pkt"


def tc_rules(lab):
    """Every filter (with a handle) on p0 ingress, all chains, with its statistics."""
    out = lab.sh(["tc", "-s", "filter", "show", "dev", "p0", "ingress"], ns="hv").stdout
    blocks = []
    for line in out.splitlines():
        if line.startswith("filter "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return [TcRule("\n".join(b)) for b in blocks if " handle " in b[0]]


def tc_text(lab):
    return lab.sh(["tc", "-s", "filter", "show", "dev", "p0", "ingress"], ns="hv").stdout


def is_adj(r):
    return r.chain >= CHAIN_ADJ_BASE


def counter(rules, pred):
    """(packets, number of rules) summed over the drop rules for which pred(rule)."""
    hit = [r for r in rules if r.drop and pred(r)]
    return sum(r.pkts for r in hit), len(hit)


COUNTERS = {
    "outer new v4": lambda r: r.chain == CHAIN_OUTER_TRACKED and "+new" in r.keys.get("ct_state", "") and not r.v6,
    "outer invalid v4": lambda r: r.chain == CHAIN_OUTER_TRACKED and "+inv" in r.keys.get("ct_state", "") and not r.v6,
    "outer new v6": lambda r: r.chain == CHAIN_OUTER_TRACKED and "+new" in r.keys.get("ct_state", "") and r.v6,
    "inner invalid v4": lambda r: is_adj(r) and "+inv" in r.keys.get("ct_state", "") and not r.v6,
}


def sub_rules(rules, sub):
    """The per-subscriber rules (adjacency chains, src_ip sub/32)."""
    return [r for r in rules if is_adj(r) and r.keys.get("src_ip", "").split("/")[0] == sub]


def punt_count(lab):
    r = lab.sh(["tc", "-s", "actions", "get", "action", "mirred", "index", str(PUNT_INDEX)], ns="hv", check=False)
    m = re.search(r"Sent (\d+) bytes (\d+) pkt", r.stdout)
    return int(m.group(2)) if m else None


# ---------------------------------------------------------------- frames

def inner_udp(sub, sport, dst, dport, payload, ttl=64):
    vid = SUB_VLAN[sub]
    l3 = IPv6(src=sub, dst=dst, hlim=ttl) if ":" in sub else IP(src=sub, dst=dst, ttl=ttl)
    return Ether(src=SUB_MAC[sub], dst=VLAN_MAC[vid]) / Dot1Q(vlan=vid) / l3 / UDP(sport=sport, dport=dport) / payload


def inner_tcp(sub, sport, dst, dport, flags, seq, ack=0):
    vid = SUB_VLAN[sub]
    return (Ether(src=SUB_MAC[sub], dst=VLAN_MAC[vid]) / Dot1Q(vlan=vid) / IP(src=sub, dst=dst, ttl=64)
            / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240))


def outer_udp(src, sport, dst, dport, payload):
    l3 = IPv6(src=src, dst=dst, hlim=64) if ":" in dst else IP(src=src, dst=dst, ttl=64)
    return Ether(src=GW_MAC, dst=VLAN_MAC[200]) / Dot1Q(vlan=200) / l3 / UDP(sport=sport, dport=dport) / payload


def outer_tcp(src, sport, dst, dport, flags, seq, ack=0):
    return (Ether(src=GW_MAC, dst=VLAN_MAC[200]) / Dot1Q(vlan=200) / IP(src=src, dst=dst, ttl=64)
            / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240))


def l4_checksum_ok(pkt):
    """Whether the frame's UDP/TCP checksum is right (NAT must fix it)."""
    l3 = IPv6 if IPv6 in pkt else IP
    ip = l3(bytes(pkt[l3]))
    l4 = UDP if UDP in ip else TCP
    want = ip[l4].chksum
    del ip[l4].chksum
    return l3(bytes(ip))[l4].chksum == want


def has_payload(data):
    return lambda p: Raw in p and p[Raw].load == data


def is_tcp_seq(seq, flags=None):
    return lambda p: TCP in p and p[TCP].seq == seq and (flags is None or str(p[TCP].flags) == flags)


def l4(pkt):
    return pkt[UDP] if UDP in pkt else pkt[TCP]


def send_get(lab, frame, match, timeout=ARRIVE_TIMEOUT):
    """Send from fab0 and wait for the matching frame on fab0: (frame or None, seconds from
    send to capture, capture summary)."""
    cap = lab.capture("fabric", "fab0")
    try:
        t0 = time.time()
        lab.send("fabric", "fab0", frame)
        got = cap.expect(match, timeout)
        return got, (got.time - t0 if got is not None else None), cap.others_summary()
    finally:
        cap.close()


def send_none(lab, frames, match, window=NOTHING_WINDOW):
    """Send frames from fab0; the first matching frame seen on fab0 within `window`, or None."""
    cap = lab.capture("fabric", "fab0")
    try:
        for f in frames:
            lab.send("fabric", "fab0", f)
        return cap.expect_none(match, window)
    finally:
        cap.close()


class Nat:
    """What the scenario learned: subscriber -> its chunks (public, lo, hi)."""

    def __init__(self):
        self.chunks = {}

    def public(self, sub):
        c = self.chunks.get(sub)
        return c[-1][0] if c else None


def outbound_mismatches(lab, got, sent, sub_public, ranges):
    """What differs between `got` and `sent` translated and routed out of VLAN 200 to the gateway.
    ranges: [(lo, hi)] the source port may be in."""
    sent = Ether(bytes(sent))
    pairs = [
        ("vlans", vlans(got), [200]),
        ("dst mac", got.dst, GW_MAC),
        ("src mac", got.src, VLAN_MAC[200]),
        ("src ip (public)", got[IP].src, sub_public if sub_public else "a pool address"),
        ("dst ip", got[IP].dst, sent[IP].dst),
        ("dst port", l4(got).dport, l4(sent).dport),
        ("src port in chunk", any(lo <= l4(got).sport <= hi for lo, hi in ranges) if ranges else "no chunk known",
         True),
        ("ttl", got[IP].ttl, sent[IP].ttl - 1),
        ("ipv4 checksum valid", ipv4_checksum_ok(got), True),
        ("l4 checksum valid", l4_checksum_ok(got), True),
    ]
    if Raw in sent:
        pairs.append(("payload", got[Raw].load if Raw in got else None, sent[Raw].load))
    if sub_public is None:
        pairs[3] = ("src ip in pool", got[IP].src in POOL, True)
    return lab.mismatches(pairs)


def inbound_mismatches(lab, got, sent, sub, sport):
    """What differs between `got` and the reply `sent` de-translated to sub:sport on its VLAN."""
    sent = Ether(bytes(sent))
    v6 = IPv6 in sent
    l3 = IPv6 if v6 else IP
    pairs = [
        ("vlans", vlans(got), [SUB_VLAN[sub]]),
        ("dst mac", got.dst, SUB_MAC[sub]),
        ("src mac", got.src, VLAN_MAC[SUB_VLAN[sub]]),
        ("src ip", got[l3].src, sent[l3].src),
        ("dst ip", got[l3].dst, sub),
        ("src port", l4(got).sport, l4(sent).sport),
        ("dst port", l4(got).dport, sport),
        ("ttl", got[IPv6].hlim if v6 else got[IP].ttl, (sent[IPv6].hlim if v6 else sent[IP].ttl) - 1),
        ("l4 checksum valid", l4_checksum_ok(got), True),
    ]
    if not v6:
        pairs.append(("ipv4 checksum valid", ipv4_checksum_ok(got), True))
    if Raw in sent:
        pairs.append(("payload", got[Raw].load if Raw in got else None, sent[Raw].load))
    return lab.mismatches(pairs)


# ---------------------------------------------------------------- ctnetlink (the chunk limit)

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IPCTNL_MSG_CT_NEW = (1 << 8) | 0   # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
NLA_F_NESTED = 0x8000
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_TIMEOUT, CTA_ZONE = 1, 2, 3, 7, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
IPS_SEEN_REPLY, IPS_CONFIRMED = 1 << 1, 1 << 3   # a created entry is confirmed: the kernel wants the bit kept


def _nla(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * (-n % 4)


def _tuple(t, src, dst, sport, dport):
    ip = _nla(CTA_TUPLE_IP | NLA_F_NESTED, _nla(CTA_IP_V4_SRC, socket.inet_aton(src))
              + _nla(CTA_IP_V4_DST, socket.inet_aton(dst)))
    proto = _nla(CTA_TUPLE_PROTO | NLA_F_NESTED, _nla(CTA_PROTO_NUM, bytes([17]))
                 + _nla(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
                 + _nla(CTA_PROTO_DST_PORT, struct.pack("!H", dport)))
    return _nla(t | NLA_F_NESTED, ip + proto)


def ct_insert(lab, entries, timeout=300):
    """UDP conntrack entries in zone ZONE: [(src, sport, dst, dport, reply_dst, reply_dport)].
    Returns (made, first error or "")."""
    with lab.netns("hv"):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    made, err = 0, ""
    try:
        s.bind((0, 0))
        s.settimeout(10)
        for seq, (src, sport, dst, dport, rdst, rdport) in enumerate(entries, 1):
            body = (struct.pack("=BBH", socket.AF_INET, 0, 0)
                    + _tuple(CTA_TUPLE_ORIG, src, dst, sport, dport)
                    + _tuple(CTA_TUPLE_REPLY, dst, rdst, dport, rdport)
                    + _nla(CTA_STATUS, struct.pack("!I", IPS_CONFIRMED | IPS_SEEN_REPLY))
                    + _nla(CTA_TIMEOUT, struct.pack("!I", timeout))
                    + _nla(CTA_ZONE, struct.pack("!H", ZONE)))
            flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
            s.send(struct.pack("=IHHII", 16 + len(body), IPCTNL_MSG_CT_NEW, flags, seq, 0) + body)
            data = s.recv(65536)
            _len, typ, _fl, _seq, _pid = struct.unpack_from("=IHHII", data)
            code = struct.unpack_from("=i", data, 16)[0] if typ == NLMSG_ERROR else -1
            if code == 0:
                made += 1
            elif not err:
                err = f"entry {seq} ({src}:{sport}): {os.strerror(-code) if code < 0 else 'unexpected reply'}"
    finally:
        s.close()
    return made, err


# ---------------------------------------------------------------- setup

def setup(lab):
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    for vid, v4, v6, hosts in (
            (100, "10.100.0.1/24", "fd00:100::1/64",
             [(SUB_A, SUB_MAC[SUB_A]), ("fd00:100::2", SUB_MAC[SUB_A]), (SUB_B, SUB_MAC[SUB_B])]),
            (101, "10.101.0.1/24", "fd00:101::1/64", [(SUB_R, SUB_MAC[SUB_R])]),
            (200, "10.200.0.1/24", "fd00:200::1/64", [("10.200.0.254", GW_MAC), ("fd00:200::fe", GW_MAC)])):
        lab.vlan_device("hv", "p0", vid, v4, v6, hosts, mac=VLAN_MAC[vid])
    lab.sh_lines([
        "ip route add default via 10.200.0.254 dev p0.200",
        "ip -6 route add default via fd00:200::fe dev p0.200",
    ], ns="hv")
    lab.sysctl("hv", "net.ipv4.ip_forward", 0)
    lab.sysctl("hv", "net.ipv6.conf.all.forwarding", 0)
    lab.sysctl("fabric", "net.ipv6.conf.fab0.disable_ipv6", 1)


def read_sysctl(lab, ns, key):
    try:
        with lab.netns(ns):
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                return f.read().strip()
    except OSError as e:
        return f"unreadable ({e.strerror})"


def start(lab, config, tag):
    return start_daemon(lab, config, tag, timeout=START_TIMEOUT)


# ---------------------------------------------------------------- checks

class Run:
    """State shared by the checks."""

    def __init__(self, lab, config):
        self.lab, self.config = lab, config
        self.daemons = []
        self.daemon = None
        self.nat = Nat()
        self.flows = {}          # name -> (sub, sport, dst, dport, public, public port, proto)
        self.timings = []        # (what, seconds)

    def ranges(self, sub):
        return [(lo, hi) for _p, lo, hi in self.nat.chunks.get(sub, [])]

    def learn_chunk(self, sub, timeout, since=0):
        """Wait for `chunk-allocated subscriber=sub` in the current daemon's log (from line `since`);
        record it. Returns ((public, lo, hi) or None, why)."""
        fields, line, _i = self.daemon.wait_event("chunk-allocated", lambda f: f.get("subscriber") == sub,
                                                  timeout, since)
        if fields is None:
            return None, line
        _s, public, lo, hi = chunk(fields)
        c = (public, lo, hi)
        if c not in self.nat.chunks.setdefault(sub, []):
            self.nat.chunks[sub].append(c)
        return c, line.strip()


def check_start(run, rec):
    lab, d = run.lab, run.daemon
    refused = d.events("rule-refused")
    lab.check(f"daemon started in hv with the nat mapping and installed its rules in {rec['_s']} s "
              f"(rules={rec.get('rules')} added={rec.get('added')} refused={rec.get('refused')})",
              rec.get("refused") == "0" and not refused and int(rec.get("rules", 0)) > 0,
              f"{rec['_line']}; refused: {[f for f in refused[:2]]}")
    lab.note(f"first pass: {rec['_line']}")
    for ev in ("nat-running", "nat-not-running", "nat-resynced", "conntrack-events"):
        for f in d.events(ev):
            lab.note(f"daemon: {ev} {' '.join(f'{k}={v}' for k, v in f.items())}")
    links = lab.sh(["ip", "-br", "link", "show"], ns="hv").stdout
    lab.check("daemon made its punt pair dpo-inject / dpo-punt in hv",
              re.search(r"^dpo-inject\b", links, re.M) and re.search(r"^dpo-punt\b", links, re.M),
              f"links in hv: {' '.join(l.split()[0] for l in links.splitlines())}")
    v4, v6 = read_sysctl(lab, "hv", "net.ipv4.ip_forward"), read_sysctl(lab, "hv", "net.ipv6.conf.all.forwarding")
    lab.check("kernel forwarding is off in hv (ip_forward=0, ipv6 all.forwarding=0)", (v4, v6) == ("0", "0"),
              f"ip_forward={v4} all.forwarding={v6}")
    lab.note(f"hv net.netfilter.nf_conntrack_events={read_sysctl(lab, 'hv', 'net.netfilter.nf_conntrack_events')} "
             "(the daemon wants 1)")
    rules = tc_rules(lab)
    lab.note(f"rules: {len(rules)}; outer chain ct rules {sum(1 for r in rules if r.chain == CHAIN_OUTER and 'ct' in ' '.join(r.actions) and 'zone' in ' '.join(r.actions))}, "
             f"chain {CHAIN_OUTER_TRACKED:#x} {sum(1 for r in rules if r.chain == CHAIN_OUTER_TRACKED)}, "
             f"adjacency chains {sorted({hex(r.chain) for r in rules if is_adj(r)})}")


def check_inner_inner(run):
    """Inner -> inner is routed untranslated (no chunk)."""
    lab = run.lab
    payload = b"dpo-nat inner-inner"
    frame = inner_udp(SUB_A, 39000, SUB_R, 5001, payload)
    got, _t, others = send_get(lab, frame, has_payload(payload))
    name = "ipv4 blue -> red (inner -> inner) routed by tc untranslated (vid 101, macs, src 10.100.0.2:39000, ttl 63)"
    if got is None:
        return lab.check(name, False, f"not seen on fab0; {others}")
    bad = lab.mismatches([("vlans", vlans(got), [101]), ("dst mac", got.dst, SUB_MAC[SUB_R]),
                          ("src mac", got.src, VLAN_MAC[101]), ("src ip", got[IP].src, SUB_A),
                          ("src port", got[UDP].sport, 39000), ("ttl", got[IP].ttl, 63)])
    lab.check(name, not bad, f"{bad} in {describe(got)}")


def first_packet(run, sub, sport, dst, dport, tag):
    """A subscriber's first packet: (translated frame or None, chunk or None). Checks that the very
    packet sent comes out translated into the logged chunk."""
    lab, d = run.lab, run.daemon
    since = len(d.lines())
    payload = f"dpo-nat first {tag}".encode()
    frame = inner_udp(sub, sport, dst, dport, payload)
    punted0 = punt_count(lab)
    cap = lab.capture("fabric", "fab0")
    try:
        t0 = time.time()
        lab.send("fabric", "fab0", frame)
        got = cap.expect(has_payload(payload), FIRST_TIMEOUT)
        delay = got.time - t0 if got is not None else None
        dup = cap.expect_none(has_payload(payload), window=0.3) if got is not None else None
        others = cap.others_summary()
    finally:
        cap.close()
    c, why = run.learn_chunk(sub, 2.0 if got is not None else 0.5, since)
    punted = punt_count(lab)
    punt_note = f"punt counter {punted0} -> {punted}"
    name = (f"{tag}: first UDP packet {sub}:{sport} -> {dst}:{dport} leaves on vlan 200 to the gateway, "
            "source translated into its logged chunk (the packet itself, not a retry)")
    if got is None:
        lab.check(name, False, f"not seen on fab0 within {FIRST_TIMEOUT:.0f} s ({punt_note}; chunk log: "
                               f"{why}); {others}")
        return None, c
    run.timings.append((f"first packet of {sub} (punt, chunk, rule, put back)", delay))
    if c is None:
        lab.check(name, False, f"came out as {describe(got)} sport {l4(got).sport} but no chunk-allocated line "
                               f"for {sub}: {why}")
        return got, None
    bad = outbound_mismatches(lab, got, frame, c[0], [(c[1], c[2])])
    when = re.search(r"time=(\S+)", why)
    try:
        skew = abs(calendar.timegm(time.strptime(when.group(1), "%Y-%m-%dT%H:%M:%SZ")) - time.time())
    except (AttributeError, ValueError):
        skew = None
    if skew is None or skew > 5:
        bad = (bad + "; " if bad else "") + f"chunk line time= is not the UTC time of the event ({why})"
    if dup is not None:
        bad = (bad + "; " if bad else "") + "the packet came out twice"
    lab.check(f"{name}: {delay * 1000:.0f} ms, {got[IP].src}:{l4(got).sport} in chunk-allocated "
              f"public={c[0]} ports={c[1]}-{c[2]}", not bad, f"{bad} in {describe(got)} sport {l4(got).sport}")
    lab.note(f"{tag}: {why} ({punt_note})")
    run.flows[tag] = (sub, sport, dst, dport, got[IP].src, l4(got).sport, "udp")
    return got, c


def check_first_and_later(run):
    """1 and 2: first packet of 10.100.0.2; later connections use the same chunk."""
    lab = run.lab
    got, c = first_packet(run, SUB_A, 40000, REMOTE, 53, "A")
    run.subscriber_chunk_logged = c
    # Later connections: other source ports, another destination, a TCP SYN.
    results, bad = [], []
    for i, (proto, sport, dst, dport) in enumerate((("udp", 40001, REMOTE, 53), ("udp", 40002, REMOTE2, 123),
                                                    ("tcp", 40003, REMOTE, 80), ("udp", 1500, REMOTE, 53))):
        if proto == "udp":
            payload = f"dpo-nat later {i}".encode()
            frame = inner_udp(SUB_A, sport, dst, dport, payload)
            match = has_payload(payload)
        else:
            seq = 1000000 + sport
            frame = inner_tcp(SUB_A, sport, dst, dport, "S", seq)
            match = is_tcp_seq(seq, "S")
        out, delay, others = send_get(lab, frame, match)
        if out is None:
            bad.append(f"{proto} {sport}->{dst}:{dport} not seen ({others})")
            continue
        run.timings.append((f"later connection {proto} {sport} (no punt)", delay))
        m = outbound_mismatches(lab, out, frame, run.nat.public(SUB_A), run.ranges(SUB_A))
        if m:
            bad.append(f"{proto} {sport}: {m} in {describe(out)} sport {l4(out).sport}")
        results.append(f"{proto} {sport}->{out[IP].src}:{l4(out).sport}")
        run.flows[f"A{i}"] = (SUB_A, sport, dst, dport, out[IP].src, l4(out).sport, proto)
    # NAT keeps each translated 5-tuple unique: two flows of one protocol toward the same
    # server never share a public port; toward different servers (or a UDP and a TCP flow)
    # they may, and the kernel does reuse ports so.
    tuples = [(proto, dst, dport, pport) for (_s, _sp, dst, dport, _pub, pport, proto)
              in (run.flows[f"A{i}"] for i in range(4) if f"A{i}" in run.flows)]
    if len(set(tuples)) != len(tuples):
        bad.append(f"a public port shared by two flows of one protocol toward the same server: {results}")
    lab.check(f"later connections of {SUB_A} (udp other ports, another server, tcp syn, udp sport 1500) use its "
              f"public address and ports of its chunk ({', '.join(results)})", not bad and results, "; ".join(bad))
    lab.check(f"no second chunk pulled for {SUB_A} by those connections",
              len(run.daemon.events("chunk-allocated")) == (1 if c else 0)
              and all(f.get("subscriber") == SUB_A for f in run.daemon.events("chunk-allocated")),
              f"chunk lines: {[l for *_x, l in chunk_lines([run.daemon])]}")


def reply_check(run, flow, name, sub=None):
    """3. A reply from the fabric to the public address:port comes back de-translated."""
    lab = run.lab
    f = run.flows.get(flow)
    if not f:
        return lab.check(name, False, f"flow {flow} was not established (its request did not come out)")
    sub, sport, dst, dport, public, pport, proto = f
    if proto == "udp":
        payload = f"dpo-nat reply {flow} {time.monotonic():.3f}".encode()
        frame = outer_udp(dst, dport, public, pport, payload)
        match = has_payload(payload)
    else:
        seq = 7000000 + sport
        frame = outer_tcp(dst, dport, public, pport, "SA", seq, ack=1000000 + sport + 1)
        match = is_tcp_seq(seq, "SA")
    got, delay, others = send_get(lab, frame, match)
    if got is None:
        return lab.check(name, False, f"reply {dst}:{dport} -> {public}:{pport} not seen on fab0; {others}")
    run.timings.append((f"reply {flow} ({proto})", delay))
    bad = inbound_mismatches(lab, got, frame, sub, sport)
    return lab.check(f"{name} ({dst}:{dport} -> {public}:{pport} came back to {got[IP].dst}:{l4(got).dport})",
                     not bad, f"{bad} in {describe(got)}")


def check_replies(run):
    reply_check(run, "A", f"udp reply to {SUB_A}'s first packet comes back de-translated on vlan 100 "
                          "(subscriber mac, p0.100 mac, dst 10.100.0.2:40000, ttl 63, checksums)")
    reply_check(run, "A2", f"tcp syn-ack to {SUB_A}'s syn comes back de-translated on vlan 100 (dst 10.100.0.2:40003)")
    # The flow stays: a second request of flow A is established, same mapping.
    f = run.flows.get("A")
    if f:
        payload = b"dpo-nat A again"
        frame = inner_udp(SUB_A, f[1], f[2], f[3], payload)
        got, delay, others = send_get(run.lab, frame, has_payload(payload))
        run.timings.append(("established packet (after a reply)", delay))
        run.lab.check("a second packet of the replied flow leaves with the same public address:port",
                      got is not None and (got[IP].src, l4(got).sport) == (f[4], f[5]),
                      f"{describe(got)} sport {l4(got).sport}" if got is not None else f"not seen; {others}")


def check_unsolicited(run):
    """4. Outer new / invalid: dropped and counted."""
    lab = run.lab
    pub = run.nat.public(SUB_A) or POOL[0]
    ranges = run.ranges(SUB_A) or [(1024, 1535)]
    port = run.flows["A"][5] if "A" in run.flows else ranges[0][0]
    unused = next((a for a in POOL if a != pub), POOL[-1])
    before = tc_rules(lab)
    n_new0 = counter(before, COUNTERS["outer new v4"])
    n_inv0 = counter(before, COUNTERS["outer invalid v4"])
    frames = [
        outer_udp(STRANGER, 4444, pub, port, b"dpo-nat unsolicited to the pool, mapped port"),
        outer_udp(STRANGER, 4444, unused, 2000, b"dpo-nat unsolicited to an unused pool address"),
        outer_udp(STRANGER, 4444, SUB_A, 40000, b"dpo-nat unsolicited to the subscriber"),
        outer_tcp(STRANGER, 5555, pub, ranges[0][0] + 7, "S", 424242),
        outer_tcp(STRANGER, 5555, SUB_A, 22, "S", 434343),
    ]
    leaked = send_none(lab, frames, lambda p: (Raw in p and p[Raw].load.startswith(b"dpo-nat unsolicited"))
                       or (TCP in p and p[TCP].seq in (424242, 434343)))
    after = tc_rules(lab)
    n_new1 = counter(after, COUNTERS["outer new v4"])
    lab.check(f"unsolicited outer packets (udp/tcp syn to {pub}:mapped port, to unused {unused}, to the "
              f"subscriber {SUB_A}) are not forwarded ({NOTHING_WINDOW:.0f} s window)", leaked is None,
              f"forwarded: {describe(leaked)}" if leaked is not None else "")
    lab.check(f"they are dropped by tc's outer 'new' drop rule and counted (+{n_new1[0] - n_new0[0]} of "
              f"{len(frames)}, {n_new1[1]} rule(s))", n_new1[1] > 0 and n_new1[0] - n_new0[0] == len(frames),
              f"no drop rule with ct_state +trk+new in chain {CHAIN_OUTER_TRACKED:#x}" if not n_new1[1]
              else f"counter went {n_new0[0]} -> {n_new1[0]}")
    # Outer invalid: a TCP packet with SYN+FIN.
    frame = outer_tcp(STRANGER, 5556, pub, port, "SF", 454545)
    leaked = send_none(lab, [frame], is_tcp_seq(454545))
    n_inv1 = counter(tc_rules(lab), COUNTERS["outer invalid v4"])
    lab.check(f"outer invalid (tcp syn+fin to {pub}) not forwarded and counted by the outer 'invalid' drop "
              f"rule (+{n_inv1[0] - n_inv0[0]})", leaked is None and n_inv1[1] and n_inv1[0] - n_inv0[0] == 1,
              f"forwarded: {describe(leaked)}" if leaked is not None else f"counter {n_inv0} -> {n_inv1} (pkts, rules)")


def check_invalid(run):
    """5. Inner invalid: dropped (and counted)."""
    lab = run.lab
    c0 = counter(tc_rules(lab), COUNTERS["inner invalid v4"])
    f1 = inner_tcp(SUB_A, 40010, REMOTE, 80, "SF", 464646)
    f2 = inner_tcp(SUB_A, 40011, REMOTE, 80, "", 474747)
    leaked = send_none(lab, [f1, f2], lambda p: TCP in p and p[TCP].seq in (464646, 474747))
    c1 = counter(tc_rules(lab), COUNTERS["inner invalid v4"])
    lab.check(f"invalid tcp from {SUB_A} (syn+fin; no flags) is not forwarded ({NOTHING_WINDOW:.0f} s window)",
              leaked is None, f"forwarded: {describe(leaked)}" if leaked is not None else "")
    lab.check(f"...dropped by tc's inner 'invalid' drop rule and counted (+{c1[0] - c0[0]} of 2, {c1[1]} rule(s))",
              c1[1] and c1[0] - c0[0] == 2,
              "no drop rule with ct_state +trk+inv in an adjacency chain" if not c1[1] else f"counter {c0[0]} -> {c1[0]}")

    # An ACK that matches no connection: conntrack calls it invalid only with tcp_loose=0;
    # with the default (1) it picks the connection up mid-stream as new.
    loose = read_sysctl(lab, "hv", "net.netfilter.nf_conntrack_tcp_loose")
    try:
        lab.sysctl("hv", "net.netfilter.nf_conntrack_tcp_loose", 0)
        c0 = counter(tc_rules(lab), COUNTERS["inner invalid v4"])
        leaked = send_none(lab, [inner_tcp(SUB_A, 40012, REMOTE, 80, "A", 484848, ack=1)], is_tcp_seq(484848))
        c1 = counter(tc_rules(lab), COUNTERS["inner invalid v4"])
        lab.check(f"tcp ack matching no connection, nf_conntrack_tcp_loose=0: not forwarded and counted invalid "
                  f"(+{c1[0] - c0[0]})", leaked is None and c1[0] - c0[0] == 1,
                  f"forwarded: {describe(leaked)}" if leaked is not None else f"counter {c0[0]} -> {c1[0]}")
    finally:
        lab.sysctl("hv", "net.netfilter.nf_conntrack_tcp_loose", loose if loose in ("0", "1") else 1)
    got, _d, _o = send_get(lab, inner_tcp(SUB_A, 40013, REMOTE, 80, "A", 494949, ack=1), is_tcp_seq(494949),
                           timeout=NOTHING_WINDOW)
    lab.note(f"tcp ack matching no connection with nf_conntrack_tcp_loose={loose} (default): "
             + (f"picked up as new and translated: {describe(got)} sport {l4(got).sport}" if got is not None
                else "not forwarded"))


def check_ipv6(run):
    """9. IPv6 inner -> outer routed untranslated; replies come back; unsolicited dropped."""
    lab = run.lab
    payload = b"dpo-nat v6 inner-outer"
    frame = inner_udp("fd00:100::2", 41004, "2001:db8:5::5", 5001, payload)
    got, _d, others = send_get(lab, frame, has_payload(payload))
    name = "ipv6 vlan 100 -> default via vlan 200 gateway, untranslated (vid 200, gw mac, src kept, hop limit 63)"
    if got is None:
        lab.check(name, False, f"not seen on fab0; {others}")
    else:
        bad = lab.mismatches([("vlans", vlans(got), [200]), ("dst mac", got.dst, GW_MAC),
                              ("src mac", got.src, VLAN_MAC[200]), ("src ip", got[IPv6].src, "fd00:100::2"),
                              ("src port", got[UDP].sport, 41004), ("hop limit", got[IPv6].hlim, 63),
                              ("udp checksum valid", l4_checksum_ok(got), True)])
        lab.check(name, not bad, f"{bad} in {describe(got)}")
    reply = outer_udp("2001:db8:5::5", 5001, "fd00:100::2", 41004, b"dpo-nat v6 reply")
    got, _d, others = send_get(lab, reply, has_payload(b"dpo-nat v6 reply"))
    name = "ipv6 reply from outside comes back on vlan 100 (tracked: established)"
    if got is None:
        lab.check(name, False, f"not seen on fab0; {others}")
    else:
        bad = inbound_mismatches(lab, got, reply, "fd00:100::2", 41004)
        lab.check(name, not bad, f"{bad} in {describe(got)}")
    c0 = counter(tc_rules(lab), COUNTERS["outer new v6"])
    leaked = send_none(lab, [outer_udp("2001:db8:5::66", 4444, "fd00:100::2", 41005, b"dpo-nat v6 unsolicited")],
                       has_payload(b"dpo-nat v6 unsolicited"))
    c1 = counter(tc_rules(lab), COUNTERS["outer new v6"])
    lab.check(f"unsolicited ipv6 from outside to fd00:100::2 is not forwarded and counted by the outer 'new' "
              f"drop rule (+{c1[0] - c0[0]})", leaked is None and c1[1] and c1[0] - c0[0] == 1,
              f"forwarded: {describe(leaked)}" if leaked is not None else f"counter {c0} -> {c1} (pkts, rules)")


def check_second_subscriber(run):
    """6. Another subscriber gets its own chunk, round-robin onto another address; all its
    connections use that one address. A red subscriber too."""
    lab = run.lab
    got, c = first_packet(run, SUB_B, 40000, REMOTE, 53, "B")
    pub_a = run.nat.public(SUB_A)
    if c:
        lab.check(f"{SUB_B}'s chunk is on another pool address than {SUB_A}'s (round-robin: {c[0]} vs {pub_a}), "
                  f"and its range is inside ports {PORTS[0]}-{PORTS[1]}, {CHUNK_SIZE} ports",
                  c[0] in POOL and c[0] != pub_a and PORTS[0] <= c[1] and c[2] <= PORTS[1]
                  and c[2] - c[1] + 1 == CHUNK_SIZE, f"chunk {c}, {SUB_A} on {pub_a}")
    results, bad = [], []
    for i, (proto, sport, dst, dport) in enumerate((("udp", 40001, REMOTE, 53), ("udp", 40002, REMOTE2, 53),
                                                    ("tcp", 40003, REMOTE, 443))):
        if proto == "udp":
            payload = f"dpo-nat B later {i}".encode()
            frame, match = inner_udp(SUB_B, sport, dst, dport, payload), has_payload(payload)
        else:
            seq = 2000000 + sport
            frame, match = inner_tcp(SUB_B, sport, dst, dport, "S", seq), is_tcp_seq(seq, "S")
        out, _d, others = send_get(lab, frame, match)
        if out is None:
            bad.append(f"{proto} {sport} not seen ({others})")
            continue
        m = outbound_mismatches(lab, out, frame, run.nat.public(SUB_B), run.ranges(SUB_B))
        if m:
            bad.append(f"{proto} {sport}: {m}")
        results.append(f"{proto} {sport}->{out[IP].src}:{l4(out).sport}")
    lab.check(f"all of {SUB_B}'s connections (udp x2, tcp syn) use its one public address and its chunk "
              f"({', '.join(results)})", not bad and results, "; ".join(bad))
    reply_check(run, "B", f"reply to {SUB_B} comes back to {SUB_B} (its mac, dst 10.100.0.3:40000), "
                          f"not to {SUB_A}")

    got, c = first_packet(run, SUB_R, 40000, REMOTE, 53, "R")
    if c:
        taken = {run.nat.public(SUB_A), run.nat.public(SUB_B)}
        lab.check(f"red subscriber {SUB_R}'s chunk is on a third pool address (round-robin: {c[0]})",
                  c[0] in POOL and c[0] not in taken, f"chunk {c}, taken {taken}")
    reply_check(run, "R", f"reply to {SUB_R} comes back de-translated on vlan 101")


def check_restart(run):
    """8. Restart: an established UDP flow keeps its translation and keeps flowing."""
    lab = run.lab
    payload = b"dpo-nat before restart"
    frame = inner_udp(SUB_B, 40100, REMOTE, 53, payload)
    got, _d, others = send_get(lab, frame, has_payload(payload))
    if got is None:
        lab.check("restart: flow 10.100.0.3:40100 established before the restart", False, f"request not seen; {others}")
        return
    run.flows["Bkeep"] = (SUB_B, 40100, REMOTE, 53, got[IP].src, l4(got).sport, "udp")
    if not reply_check(run, "Bkeep", "restart: flow 10.100.0.3:40100 established before the restart "
                                     "(request translated, reply came back)"):
        return
    mapping = (got[IP].src, l4(got).sport)
    before = tc_text(lab)
    ct_before = lab.sh(["conntrack", "-L", "-w", str(ZONE)], ns="hv", check=False).stdout

    rc = run.daemon.stop()
    stopping = run.daemon.events("stopping")
    lab.check("SIGTERM: daemon exits 0 and logs stopping rules=\"left in place\"",
              rc == 0 and stopping and stopping[-1].get("rules") == "left in place",
              f"exit {rc}; log: {run.daemon.tail()}")
    run.daemon.kill()
    payload = b"dpo-nat daemon down"
    got, _d, others = send_get(lab, inner_udp(SUB_B, 40100, REMOTE, 53, payload), has_payload(payload))
    lab.check(f"daemon down: the established flow is still translated by tc to {mapping[0]}:{mapping[1]}",
              got is not None and (got[IP].src, l4(got).sport) == mapping,
              f"{describe(got)} sport {l4(got).sport}" if got is not None else f"not seen; {others}")

    run.daemon, rec = start(lab, run.config, "restart")
    run.daemons.append(run.daemon)
    if rec is None:
        return
    lab.note(f"restart: {rec['_line']} ({rec['_s']} s)")
    for f in run.daemon.events("nat-resynced"):
        lab.note(f"restart: nat-resynced {' '.join(f'{k}={v}' for k, v in f.items())}")
    after = tc_text(lab)
    allocated = run.daemon.events("chunk-allocated")
    lab.check("restart: chunks adopted from conntrack, none allocated anew (no chunk-allocated line)",
              not allocated, f"allocated: {allocated}")
    lab.check(f"restart: first reconcile sends zero filter changes (messages={rec.get('messages')} "
              f"added={rec.get('added')} replaced={rec.get('replaced')} deleted={rec.get('deleted')})",
              rec.get("messages") == "0",
              "rules differ after adoption: " + "; ".join(diff_rules(before, after)[:4]))

    payload = b"dpo-nat after restart"
    got, _d, others = send_get(lab, inner_udp(SUB_B, 40100, REMOTE, 53, payload), has_payload(payload))
    lab.check(f"after the restart the flow leaves with the same public address:port {mapping[0]}:{mapping[1]}",
              got is not None and (got[IP].src, l4(got).sport) == mapping,
              f"{describe(got)} sport {l4(got).sport}" if got is not None else f"not seen; {others}")
    reply_check(run, "Bkeep", "after the restart its reply comes back de-translated to 10.100.0.3:40100")
    payload = b"dpo-nat new after restart"
    frame = inner_udp(SUB_B, 40101, REMOTE, 53, payload)
    got, _d, others = send_get(lab, frame, has_payload(payload))
    bad = outbound_mismatches(lab, got, frame, run.nat.public(SUB_B), run.ranges(SUB_B)) if got is not None \
        else f"not seen; {others}"
    lab.check(f"after the restart a new connection of {SUB_B} still uses its adopted chunk", not bad,
              f"{bad} in {describe(got)} sport {l4(got).sport}" if got is not None else bad)
    if not allocated and run.daemon.events("chunk-allocated"):
        lab.note(f"after the restart: {run.daemon.events('chunk-allocated')}")
    if rec.get("messages") != "0":
        lab.note(f"conntrack -L -w {ZONE} before the restart: {ct_before.count(chr(10))} lines")


def diff_rules(before, after):
    def blocks(text):
        out, cur = {}, None
        for line in text.splitlines():
            if line.startswith("filter ") and " handle " in line:
                cur = line.strip()
                out[cur] = []
            elif cur and not re.search(r"Sent|installed|backlog|used_hw_stats|in_hw|not_in_hw|index|Action stat",
                                       line):
                out[cur].append(line.strip())
        return out
    b, a = blocks(before), blocks(after)
    diff = [f"gone: {k}" for k in b if k not in a] + [f"new: {k}" for k in a if k not in b]
    diff += [f"changed: {k}" for k in a if k in b and a[k] != b[k]]
    return diff


def current_chunk(run, sub, public, port):
    """The logged chunk of `sub` (any daemon) holding public:port, newest first."""
    for _tag, ev, fields, _line in reversed(chunk_lines(run.daemons)):
        s, p, lo, hi = chunk(fields)
        if ev == "chunk-allocated" and s == sub and p == public and lo <= port <= hi:
            return (p, lo, hi)
    return None


def check_limit(run):
    """6 (limit). Fill the subscriber's chunks with ctnetlink-made connections: its next chunk
    comes on the same address; at the limit new connections are dropped and counted."""
    lab = run.lab
    d = run.daemon
    # A fresh, replied connection of SUB_A: which chunk new connections go into now.
    payload = b"dpo-nat limit base"
    frame = inner_udp(SUB_A, 40300, REMOTE, 53, payload)
    since = len(d.lines())
    got, _d, others = send_get(lab, frame, has_payload(payload), timeout=FIRST_TIMEOUT)
    if got is None:
        lab.check("limit: a new connection of 10.100.0.2 comes out translated", False, f"not seen; {others}")
        return None
    run.flows["Akeep"] = (SUB_A, 40300, REMOTE, 53, got[IP].src, l4(got).sport, "udp")
    reply_check(run, "Akeep", "limit: flow 10.100.0.2:40300 established (reply came back)")
    if d.events("chunk-allocated", since):
        run.learn_chunk(SUB_A, 0.5, since)
        lab.note(f"limit: {SUB_A} had lost its chunk (idle) and pulled a new one: "
                 f"{d.events('chunk-allocated', since)}")
    c1 = current_chunk(run, SUB_A, got[IP].src, l4(got).sport)
    if not lab.check(f"limit: {SUB_A}'s current chunk known ({got[IP].src}:{l4(got).sport} in a logged chunk: {c1})",
                     c1 is not None, f"{got[IP].src}:{l4(got).sport} is in no chunk-allocated line of {SUB_A}"):
        return None
    held = [c1]
    since = len(d.lines())
    t0 = time.monotonic()
    made, err = ct_insert(lab, [(SUB_A, 50000 + i, FAKE_REMOTE, 53, c1[0], c1[1] + i) for i in range(CHUNK_SIZE)])
    t_ins = time.monotonic() - t0
    lab.note(f"limit: {made} conntrack entries made over ctnetlink in zone {ZONE} with reply dst in "
             f"{c1[0]}:{c1[1]}-{c1[2]} in {t_ins:.1f} s{'; ' + err if err else ''}")
    fields, why, _i = d.wait_event("chunk-allocated", lambda f: f.get("subscriber") == SUB_A, LOG_TIMEOUT, since)
    c2 = None
    if fields is not None:
        _s, p, lo, hi = chunk(fields)
        c2 = (p, lo, hi)
        run.nat.chunks.setdefault(SUB_A, []).append(c2)
    lab.check(f"limit: its chunk counted full ({made} connections), {SUB_A} pulls its 2nd chunk on the same "
              f"address (paired pooling: {c2})", c2 is not None and c2[0] == c1[0] and c2[1:] != c1[1:]
              and made == CHUNK_SIZE, why if c2 is None else f"{c2} vs first {c1}; made {made} ({err})")
    if c2 is None:
        return held
    held.append(c2)
    # The rule now commits into the new chunk.
    deadline = time.monotonic() + RULE_TIMEOUT
    out = None
    n = 0
    while time.monotonic() < deadline:
        n += 1
        payload = f"dpo-nat second chunk {n}".encode()
        frame = inner_udp(SUB_A, 40400 + n, REMOTE, 53, payload)
        out, _d, others = send_get(lab, frame, has_payload(payload))
        if out is not None and c2[1] <= l4(out).sport <= c2[2]:
            break
        time.sleep(0.2)
    lab.check(f"limit: new connections of {SUB_A} now go into the 2nd chunk {c2[1]}-{c2[2]} on {c2[0]} "
              f"({n} tr{'y' if n == 1 else 'ies'})",
              out is not None and out[IP].src == c2[0] and c2[1] <= l4(out).sport <= c2[2],
              f"last: {describe(out)} sport {l4(out).sport}" if out is not None else f"not seen; {others}")
    since = len(d.lines())
    made2, err2 = ct_insert(lab, [(SUB_A, 51000 + i, FAKE_REMOTE, 53, c2[0], c2[1] + i) for i in range(CHUNK_SIZE)])
    lab.note(f"limit: {made2} more entries in {c2[0]}:{c2[1]}-{c2[2]}{'; ' + err2 if err2 else ''}")
    # The subscriber's rule turns into a drop.
    deadline = time.monotonic() + RULE_TIMEOUT
    while True:
        rules = sub_rules(tc_rules(lab), SUB_A)
        if any(r.drop for r in rules) or time.monotonic() >= deadline:
            break
        time.sleep(0.3)
    drop_rules = [r for r in rules if r.drop]
    lab.check(f"limit: at {MAX_CHUNKS} full chunks the daemon turns {SUB_A}'s new-connection rule into a drop "
              f"(within {RULE_TIMEOUT:.0f} s)", drop_rules,
              f"{SUB_A}'s rules: {[r.summary() for r in rules]}; log since: "
              f"{' | '.join(d.lines()[since:][-4:])}")
    p0 = sum(r.pkts for r in drop_rules)
    poke = not drop_rules
    payload = b"dpo-nat beyond the limit"
    leaked = send_none(lab, [inner_udp(SUB_A, 40500, REMOTE, 53, payload)], has_payload(payload))
    drop_rules = [r for r in sub_rules(tc_rules(lab), SUB_A) if r.drop]
    p1 = sum(r.pkts for r in drop_rules)
    lab.check(f"limit: a new connection of {SUB_A} beyond its chunks is dropped "
              f"({NOTHING_WINDOW:.0f} s window) and counted (+{p1 - p0} on its drop rule)",
              leaked is None and drop_rules and p1 - p0 == 1,
              f"forwarded: {describe(leaked)} sport {l4(leaked).sport}" if leaked is not None
              else f"drop rule counter {p0} -> {p1} ({len(drop_rules)} rule(s))")
    refused = d.events("nat-refused", since)
    if refused:
        lab.note(f"limit: daemon logged {refused}")
    if poke:
        poke_reconcile(run)
    check_limit_lifted(run, c2)
    # Nothing else is disturbed: the subscriber's established flow, another subscriber.
    payload = b"dpo-nat est at limit"
    got, _d, others = send_get(lab, inner_udp(SUB_A, 40300, REMOTE, 53, payload), has_payload(payload))
    want = run.flows["Akeep"][4:6]
    ok_est = got is not None and (got[IP].src, l4(got).sport) == want
    payload = b"dpo-nat other sub at limit"
    frame = inner_udp(SUB_B, 40600, REMOTE, 53, payload)
    got_b, _d, others_b = send_get(lab, frame, has_payload(payload))
    bad_b = outbound_mismatches(lab, got_b, frame, run.nat.public(SUB_B), run.ranges(SUB_B)) if got_b is not None \
        else f"not seen; {others_b}"
    lab.check(f"limit: nothing else disturbed ({SUB_A}'s established flow keeps {want[0]}:{want[1]}; "
              f"{SUB_B}'s new connection translated)", ok_est and not bad_b,
              f"established: {describe(got) + ' sport ' + str(l4(got).sport) if got is not None else others}; "
              f"{SUB_B}: {bad_b}")
    return held


def check_limit_lifted(run, c2):
    """Below the limit again (some of its connections end): new connections are translated again."""
    lab = run.lab
    if not any(r.drop for r in sub_rules(tc_rules(lab), SUB_A)):
        lab.note(f"limit lifted: not tried ({SUB_A} has no drop rule to lift)")
        return
    n = 10
    r = lab.sh("; ".join(f"conntrack -D -w {ZONE} -p udp -s {SUB_A} --sport {51000 + i}" for i in range(n)),
               ns="hv", check=False)
    n = sum(int(m) for m in re.findall(r"(\d+) flow entries have been deleted", r.stderr + r.stdout))
    deadline = time.monotonic() + RULE_TIMEOUT
    tries, out, others = 0, None, ""
    while time.monotonic() < deadline:
        tries += 1
        payload = f"dpo-nat limit lifted {tries}".encode()
        out, _d, others = send_get(lab, inner_udp(SUB_A, 40800 + tries, REMOTE, 53, payload), has_payload(payload),
                                   timeout=0.3)
        if out is not None:
            break
    rules = sub_rules(tc_rules(lab), SUB_A)
    lab.check(f"limit lifted: after {n} of {SUB_A}'s connections in its full 2nd chunk end, its new connections "
              f"are translated again into {c2[0]}:{c2[1]}-{c2[2]} (within {RULE_TIMEOUT:.0f} s)",
              out is not None and out[IP].src == c2[0] and c2[1] <= l4(out).sport <= c2[2],
              f"{tries} tries, none came out; {SUB_A}'s rules: {[r.summary() for r in rules]}" if out is None
              else f"came out as {describe(out)} sport {l4(out).sport}")


def check_pool_empty(run):
    """New subscribers take the pool's remaining chunks; then the pool is empty (released chunks
    are in quarantine for 120 s): the next subscriber's first packet is dropped and the refusal logged."""
    lab, d = run.lab, run.daemon
    total = (PORTS[1] - PORTS[0] + 1) // CHUNK_SIZE * len(POOL)
    taken = {chunk(f)[1:] for _t, ev, f, _l in chunk_lines(run.daemons) if ev == "chunk-allocated"}
    lab.note(f"pool: {total} chunks; {len(taken)} allocated so far in this run (released ones are in quarantine)")
    got_chunks, refused_sub = [], None
    for host in range(4, 4 + total + 1):
        sub = f"10.100.0.{host}"
        SUB_MAC[sub], SUB_VLAN[sub] = f"02:00:00:00:01:{host:02x}", 100
        since = len(d.lines())
        payload = f"dpo-nat pool {sub}".encode()
        out, _d, _o = send_get(lab, inner_udp(sub, 40000, REMOTE, 53, payload), has_payload(payload),
                               timeout=FIRST_TIMEOUT if len(taken) < total else NOTHING_WINDOW)
        c, _why = run.learn_chunk(sub, 0.5 if out is not None else 0.2, since)
        if out is None and c is None:
            refused_sub = sub
            break
        got_chunks.append((sub, c, out[IP].src if out is not None else None))
        if c:
            taken.add(c)
    if refused_sub is None:
        return lab.check(f"pool exhausted after {total} chunks: the next first packet is refused", False,
                         f"every first packet got a chunk: {got_chunks}")
    fields, why, _i = d.wait_event("nat-refused", lambda f: f.get("subscriber") == refused_sub, 2.0, since)
    lab.check(f"pool empty after {len(taken)} of {total} chunks (the last {len(got_chunks)} to new subscribers "
              f"{[g[1] for g in got_chunks]}): {refused_sub}'s first packet is not forwarded and the refusal is "
              f"logged ({why.strip() if fields else 'no nat-refused line'})",
              fields is not None and fields.get("reason") == "pool-empty" and len(taken) == total
              and all(c and out == c[0] for _s, c, out in got_chunks),
              f"chunks taken {len(taken)} of {total}; refusal: {why}; new subscribers: {got_chunks}")
    # What a subscriber without a chunk costs: each of its packets is punted and refused.
    since = len(d.lines())
    p0 = punt_count(lab)
    for i in range(20):
        lab.send("fabric", "fab0", inner_udp(refused_sub, 40001 + i, REMOTE, 53, b"dpo-nat pool empty flood"))
    time.sleep(1.0)
    lab.note(f"pool empty: 20 more new connections of {refused_sub}: punted {p0} -> {punt_count(lab)}, "
             f"{len(d.events('nat-refused', since))} nat-refused line(s) logged")
    payload = b"dpo-nat pool empty, old subscriber"
    frame = inner_udp(SUB_B, 40900, REMOTE, 53, payload)
    out, _d, others = send_get(lab, frame, has_payload(payload))
    bad = outbound_mismatches(lab, out, frame, run.nat.public(SUB_B), run.ranges(SUB_B)) if out is not None \
        else f"not seen; {others}"
    lab.check(f"pool empty: {SUB_B} (holds a chunk) still opens new connections", not bad, bad)


def poke_reconcile(run):
    """Diagnosis, notes only: does an unrelated kernel change (a route add, which makes the daemon
    reconcile) bring the subscriber's drop rule? If so the NAT state is right but was not applied."""
    lab, d = run.lab, run.daemon
    since = len(d.lines())
    lab.sh("ip route add 192.0.2.0/24 via 10.200.0.254 dev p0.200", ns="hv")
    deadline = time.monotonic() + RULE_TIMEOUT
    while True:
        rules = sub_rules(tc_rules(lab), SUB_A)
        if any(r.drop for r in rules) or time.monotonic() >= deadline:
            break
        time.sleep(0.3)
    recs = [l.strip() for l in d.lines()[since:] if parse_log_line(l)[0] == "reconciled"]
    drop_rules = [r for r in rules if r.drop]
    lab.note(f"limit diagnosis: after an unrelated `ip route add 192.0.2.0/24` the daemon reconciled "
             f"({recs[-1] if recs else 'no reconciled line'}); {SUB_A}'s new-connection rule is now "
             f"{'a DROP' if drop_rules else 'still: ' + '; '.join(r.summary() for r in rules)}")
    if drop_rules:
        p0 = sum(r.pkts for r in drop_rules)
        payload = b"dpo-nat beyond the limit, after the poke"
        leaked = send_none(lab, [inner_udp(SUB_A, 40501, REMOTE, 53, payload)], has_payload(payload))
        p1 = sum(r.pkts for r in sub_rules(tc_rules(lab), SUB_A) if r.drop)
        lab.note(f"limit diagnosis: then a new connection of {SUB_A} is "
                 + (f"forwarded ({describe(leaked)})" if leaked is not None else "not forwarded")
                 + f", drop counter {p0} -> {p1}")
    lab.sh("ip route del 192.0.2.0/24 via 10.200.0.254 dev p0.200", ns="hv")


def check_idle_release(run, held):
    """7. With its connections gone, the subscriber's chunks go back within chunk_idle_seconds + slack."""
    lab, d = run.lab, run.daemon
    if not held:
        held = [c for c in run.nat.chunks.get(SUB_A, [])][-MAX_CHUNKS:]
    since = len(d.lines())
    t0 = time.monotonic()
    r = lab.sh(["conntrack", "-D", "-w", str(ZONE), "-s", SUB_A], ns="hv", check=False)
    lab.note(f"conntrack -D -w {ZONE} -s {SUB_A}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    left = lab.sh(["conntrack", "-L", "-w", str(ZONE), "-s", SUB_A], ns="hv", check=False).stdout.strip()
    deadline = t0 + IDLE_S + RELEASE_SLACK
    released = {}
    while time.monotonic() < deadline and len(released) < len(held):
        for line in d.lines()[since:]:
            ev, f = parse_log_line(line)
            if ev == "chunk-released" and f.get("subscriber") == SUB_A:
                c = chunk(f)[1:]
                released.setdefault(c, time.monotonic() - t0)
        time.sleep(0.1)
    missing = [c for c in held if c not in released]
    lab.check(f"idle release: after its connections are deleted, {SUB_A}'s chunks {held} are released "
              f"within {IDLE_S}+{RELEASE_SLACK:.0f} s ("
              + ", ".join(f"{c[0]}:{c[1]}-{c[2]} after {s:.1f} s" for c, s in released.items()) + ")",
              not missing and not left,
              f"not released: {missing}; conntrack left: {left[:200]}; log: {' | '.join(d.lines()[since:][-4:])}")
    if released:
        run.timings.append(("conntrack -D -> last chunk-released", max(released.values())))
    rules = sub_rules(tc_rules(lab), SUB_A)
    lab.note(f"after the release, {SUB_A}'s rules: {[r.summary() for r in rules] or 'none'}")
    # RFC 6888 REQ-8: a released chunk's ports are not handed out again at once.
    got, c = first_packet(run, SUB_A, 40700, REMOTE, 53, "A after release")
    if c:
        lab.check(f"after the release {SUB_A}'s next first packet pulls a chunk that is not one just released "
                  f"({c[0]}:{c[1]}-{c[2]}; released: {list(released)})", c not in released, "")


def note_nat_stats(run):
    lab = run.lab
    rules = tc_rules(lab)
    nat = [r for r in rules if r.chain in (CHAIN_OUTER_TRACKED,) or is_adj(r)
           or any(" ct " in f" {a} " or a.startswith("ct ") for a in r.actions)]
    lab.note(f"tc -s hit counts of the NAT rules ({len(nat)} rules; those with hits):")
    for r in nat:
        if r.pkts:
            lab.note("  " + r.summary())
    lab.note(f"punt mirred (index {PUNT_INDEX:#x}): {punt_count(lab)} pkt")


def note_logs(run):
    lab = run.lab
    for tag, _ev, _f, line in chunk_lines(run.daemons):
        lab.note(f"chunk log ({tag}): {line}")
    for d in run.daemons:
        recs = [l.strip() for l in d.lines() if parse_log_line(l)[0] == "reconciled"]
        lab.note(f"daemon {d.tag}: {len(recs)} reconciled line(s)")
        for l in recs[:3] + (["..."] if len(recs) > 6 else []) + recs[max(3, len(recs) - 3):]:
            lab.note(f"  {l}")
        other = [l.strip() for l in d.lines() if parse_log_line(l)[0] not in ("reconciled", "chunk-allocated",
                                                                               "chunk-released")]
        for l in other[:12]:
            lab.note(f"  {l}")
    for what, s in run.timings:
        if s is not None:
            lab.note(f"timing: {what}: {s * 1000:.1f} ms")
    first = sorted(s for w, s in run.timings if s is not None and w.startswith("first packet"))
    other = sorted(s for w, s in run.timings if s is not None and not w.startswith(("first packet", "conntrack")))
    if first and other:
        lab.note(f"timing: send -> seen on fab0, first packets (punted) median {first[len(first) // 2] * 1000:.1f} ms "
                 f"(n={len(first)}, max {first[-1] * 1000:.1f}); other packets through tc median "
                 f"{other[len(other) // 2] * 1000:.1f} ms (n={len(other)}): the punt adds about "
                 f"{(first[len(first) // 2] - other[len(other) // 2]) * 1000:.0f} ms")


def trace_state(run):
    """On failure: what the kernel and the daemon hold (tc rules of the NAT chains, conntrack, log)."""
    lab = run.lab
    out = lambda s: print(f"  | {s}", flush=True)  # noqa: E731
    out("---- tc -s filter show dev p0 ingress: the NAT rules (chain 0x200 ct, 0x201 ct_state, adjacency chains "
        ">= 0x1000); routing rules and action details left out")
    text = tc_text(lab)
    keep = False
    for line in text.splitlines():
        if line.startswith("filter "):
            m = re.search(r"chain (\d+)", line)
            ch = int(m.group(1)) if m else 0
            m = re.search(r"pref (\d+)", line)
            pref = int(m.group(1)) if m else 0
            keep = (" handle " in line and (ch >= CHAIN_ADJ_BASE or (ch == CHAIN_OUTER and pref in (50, 51))
                                             or (ch == CHAIN_OUTER_TRACKED and pref < 100)))
        if keep and line.strip() and not re.match(
                r"\s+(random type|backlog|used_hw_stats|index|Action statistics|cookie|key #|eth_type|not_in_hw)",
                line):
            out(line.rstrip())
    ct = lab.sh(["conntrack", "-L", "-w", str(ZONE)], ns="hv", check=False)
    lines = ct.stdout.strip().splitlines()
    out(f"---- conntrack -L -w {ZONE}: {len(lines)} entries (first 30); {ct.stderr.strip()}")
    for line in lines[:30]:
        out(line)
    for d in run.daemons:
        out(f"---- daemon {d.tag} log (last 40 lines)")
        for line in d.lines()[-40:]:
            out(line)


def check_flush(run, config):
    """--flush removes everything the daemon owns: its uplink rules and the punt pair."""
    lab = run.lab
    rc = run.daemon.stop()
    r = lab.sh(["ip", "netns", "exec", "hv", lab.daemon_path(), "--flush", "--config", config], check=False)
    ev, fields = parse_log_line(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")
    links = lab.sh(["ip", "-br", "link", "show"], ns="hv").stdout
    left = [l for l in lab.sh(["tc", "filter", "show", "dev", "p0", "ingress"], ns="hv").stdout.splitlines()
            if " handle " in l]
    lab.check("--flush (daemon stopped) removes the uplink rules and the nat punt pair",
              rc == 0 and r.returncode == 0 and ev == "flushed" and fields.get("nat_punt_pair") == "deleted"
              and "dpo-punt" not in links and "dpo-inject" not in links and not left,
              f"daemon exit {rc}; flush exit {r.returncode}: {r.stderr.strip()[-300:]}; "
              f"{len(left)} filters left; links: {links.split()[:12]}")


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    setup(lab)
    fd, config = tempfile.mkstemp(prefix="nat_vlan-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING)
    r = Run(lab, config)
    try:
        r.daemon, rec = start(lab, config, "first")
        r.daemons.append(r.daemon)
        if rec is None:
            return
        check_start(r, rec)
        check_inner_inner(r)
        check_first_and_later(r)
        check_replies(r)
        check_unsolicited(r)
        check_invalid(r)
        check_ipv6(r)
        check_second_subscriber(r)
        check_restart(r)
        held = check_limit(r) if r.daemon.proc.poll() is None else None
        check_idle_release(r, held)
        check_pool_empty(r)
        note_nat_stats(r)
        check_flush(r, config)
    finally:
        try:
            note_logs(r)
            if lab.failed:
                trace_state(r)
        finally:
            for d in r.daemons:
                d.kill()
            os.unlink(config)

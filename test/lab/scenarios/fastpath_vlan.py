# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast path: dpoffloadd's tc flower rules route between VLAN sub-interfaces of the uplink.

    fabric netns                      hv netns (the hypervisor, runs dpoffloadd)
    fab0  <------------ veth ------------>  p0   (clsact ingress: the daemon's rules)
    (scapy sends and captures)              +- p0.100  blue     inner  10.100.0.1/24 fd00:100::1/64
                                            +- p0.101  red      inner  10.101.0.1/24 fd00:101::1/64
                                            +- p0.200  transit  outer  10.200.0.1/24 fd00:200::1/64
                                            +- p0.999  (not in the mapping: an unknown VLAN)

Each VLAN sub-interface has its own MAC, so the rewritten source MAC names the egress
interface. Fabric hosts are static neighbours; the default routes go via a gateway on
VLAN 200. The mapping has no `nat`, so inner -> outer is routed untranslated.

The kernel's forwarding is OFF (net.ipv4.ip_forward=0, net.ipv6.conf.all.forwarding=0)
for every forwarding check: a frame that comes back routed was routed by tc. It is
turned on only for the TTL 1 check, where the kernel must answer.
"""

import os
import re
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time

from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6TimeExceeded, IPv6, IPerror6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import describe, ipv4_checksum_ok, parse_log_line, payload_is, start_daemon, vlans

SCENARIO_MACS = {  # netdev -> its own MAC
    "p0.100": "02:dd:00:00:64:01",
    "p0.101": "02:dd:00:00:65:01",
    "p0.200": "02:dd:00:00:c8:01",
}
HOST100_MAC = "02:00:00:00:01:02"     # 10.100.0.2 / fd00:100::2 on blue
HOST101_MAC = "02:00:00:00:02:02"     # 10.101.0.2 / fd00:101::2 on red
HOST101_MAC_NEW = "02:00:00:00:02:99"  # its MAC after check 6c
GW_MAC = "02:00:00:00:c8:fe"          # 10.200.0.254 / fd00:200::fe on transit

MAPPING = """{
  "uplink": "p0",
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100", "role": "inner", "vlan": 100 },
    { "name": "red",     "netdev": "p0.101", "role": "inner", "vlan": 101 },
    { "name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200 }
  ]
}
"""

START_TIMEOUT = 20.0    # daemon start to its first `reconciled` line (TCG is slow)
CHANGE_LIMIT = 1.0      # a kernel change must be in the fast path within this
PROBE_INTERVAL = 0.02   # a fresh probe this often while waiting for a change
NOTHING_WINDOW = 1.0    # "nothing arrives" window
RULE_CHAIN_INNER = 256  # lib/core/compile/pipeline.hpp kChainInner


# ---------------------------------------------------------------- the daemon

# ---------------------------------------------------------------- tc

def tc_filters(lab, chain=None, stats=False):
    """`tc filter show dev p0 ingress` split into one text block per filter."""
    cmd = ["tc"] + (["-s"] if stats else []) + ["filter", "show", "dev", "p0", "ingress"]
    if chain is not None:
        cmd += ["chain", str(chain)]
    out = lab.sh(cmd, ns="hv").stdout
    blocks = []
    for line in out.splitlines():
        if line.startswith("filter "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return ["\n".join(b).strip() for b in blocks]


def rule_blocks(blocks):
    """Only the blocks of actual rules (a flower filter with a handle)."""
    return [b for b in blocks if " handle " in b.splitlines()[0]]


def rule_head(block):
    """chain / pref / handle / match keys of a block, one line, for reports."""
    lines = block.splitlines()
    head = re.sub(r"^filter (parent \S+ )?", "", lines[0])
    keys = [l.strip() for l in lines[1:] if re.match(r"\s+(vlan_id|vlan_ethtype|dst_ip|ip_ttl|eth_type)\b", l)]
    return " ".join([head] + keys)


def note_stats(lab, when):
    """Hit counts and offload status of the inner routing chain, as notes."""
    blocks = rule_blocks(tc_filters(lab, chain=RULE_CHAIN_INNER, stats=True))
    in_hw = sum(1 for b in blocks if re.search(r"^\s*in_hw\b", b, re.M))
    not_in_hw = sum(1 for b in blocks if re.search(r"^\s*not_in_hw\b", b, re.M))
    lab.note(f"tc -s filter show dev p0 ingress chain {RULE_CHAIN_INNER} ({when}): {len(blocks)} rules, "
             f"in_hw {in_hw}, not_in_hw {not_in_hw}")
    for b in blocks:
        m = re.search(r"Sent (\d+) bytes (\d+) pkt", b)
        pkts = int(m.group(2)) if m else 0
        if pkts:
            lines = b.splitlines()
            pref = re.search(r"pref (\d+)", lines[0])
            dst = next((l.strip() for l in lines if l.strip().startswith("dst_ip")), "any dst")
            eth = next((l.strip() for l in lines if l.strip().startswith("vlan_ethtype")), "")
            ttl = next((l.strip() for l in lines if l.strip().startswith("ip_ttl")), "")
            act = "mirred" if "mirred" in b else ("pass" if "gact action pass" in b else "?")
            lab.note(f"  pref {pref.group(1) if pref else '?'} {eth} {dst} {ttl} -> {act}: {pkts} pkt")
    return blocks


# ---------------------------------------------------------------- frames

def udp_frame(vid, src_mac, dst_mac, src_ip, dst_ip, sport, payload, ttl=64):
    v6 = ":" in dst_ip
    l3 = IPv6(src=src_ip, dst=dst_ip, hlim=ttl) if v6 else IP(src=src_ip, dst=dst_ip, ttl=ttl)
    return Ether(src=src_mac, dst=dst_mac) / Dot1Q(vlan=vid) / l3 / UDP(sport=sport, dport=5001) / payload


def from_blue(dst_ip, sport, payload, ttl=64):
    src = "fd00:100::2" if ":" in dst_ip else "10.100.0.2"
    return udp_frame(100, HOST100_MAC, SCENARIO_MACS["p0.100"], src, dst_ip, sport, payload, ttl)


def routed_mismatches(lab, got, sent, vid_out, out_mac, src_mac):
    """What differs between `got` and `sent` routed by one hop out of VLAN vid_out."""
    sent = Ether(bytes(sent))
    if IPv6 in sent:
        l3 = [("hop limit", got[IPv6].hlim, sent[IPv6].hlim - 1),
              ("src ip", got[IPv6].src, sent[IPv6].src), ("dst ip", got[IPv6].dst, sent[IPv6].dst)]
    else:
        l3 = [("ttl", got[IP].ttl, sent[IP].ttl - 1),
              ("src ip", got[IP].src, sent[IP].src), ("dst ip", got[IP].dst, sent[IP].dst),
              ("ipv4 checksum valid", ipv4_checksum_ok(got), True)]
    return lab.mismatches([
        ("vlans", vlans(got), [vid_out]),
        ("dst mac", got.dst, out_mac),
        ("src mac", got.src, src_mac),
        *l3,
        ("udp checksum", got[UDP].chksum, sent[UDP].chksum),
        ("payload", got[Raw].load, sent[Raw].load),
    ])


def forward_check(lab, name, frame, vid_out, out_mac, src_mac):
    """Send `frame` from the fabric; expect it back routed on vid_out."""
    payload = frame[Raw].load
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0", payload_is(payload))
    if got is None:
        return lab.check(name, False, f"no routed frame on fab0 within the timeout; {cap.others_summary()}")
    bad = routed_mismatches(lab, got, frame, vid_out, out_mac, src_mac)
    return lab.check(name, not bad, f"{bad} in {describe(got)}")


def probe_until(lab, make_frame, want, t_change, limit=CHANGE_LIMIT):
    """Send a fresh probe every PROBE_INTERVAL until a frame for which want(pkt) is true
    comes back, or `limit` seconds after t_change. Returns (frame or None, (when the probe
    that came back was sent, when it arrived) in seconds after t_change, probes sent, capture).
    A probe that is not back within PROBE_INTERVAL may still arrive while a later one waits."""
    cap = lab.capture("fabric", "fab0")
    seq, sent_at = 0, {}
    try:
        while True:
            seq += 1
            frame = make_frame(seq)
            sent_at[frame[Raw].load] = time.monotonic() - t_change
            lab.send("fabric", "fab0", frame)
            left = t_change + limit - time.monotonic()
            got = cap.expect(want, timeout=max(0.0, min(PROBE_INTERVAL, left)))
            if got is not None:
                arrived = time.monotonic() - (time.time() - got.time)  # got.time is wall clock
                return got, (sent_at.get(got[Raw].load), arrived - t_change), seq, cap
            if time.monotonic() - t_change >= limit:
                return None, None, seq, cap
    finally:
        cap.close()


# ---------------------------------------------------------------- setup

def setup(lab):
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    for vid, v4, v6, host4, host6, mac in (
            (100, "10.100.0.1/24", "fd00:100::1/64", "10.100.0.2", "fd00:100::2", HOST100_MAC),
            (101, "10.101.0.1/24", "fd00:101::1/64", "10.101.0.2", "fd00:101::2", HOST101_MAC),
            (200, "10.200.0.1/24", "fd00:200::1/64", "10.200.0.254", "fd00:200::fe", GW_MAC)):
        lab.vlan_device("hv", "p0", vid, v4, v6, [(host4, mac), (host6, mac)], mac=SCENARIO_MACS[f"p0.{vid}"])
    lab.sh_lines([
        "ip route add default via 10.200.0.254 dev p0.200",
        "ip -6 route add default via fd00:200::fe dev p0.200",
        # A VLAN the kernel knows and the mapping does not: the fast path must not touch it.
        "ip link add link p0 name p0.999 type vlan id 999",
        "sysctl -q -w net.ipv6.conf.p0/999.disable_ipv6=1",
        "ip link set p0.999 up",
    ], ns="hv")
    set_forwarding(lab, 0)
    lab.sysctl("fabric", "net.ipv6.conf.fab0.disable_ipv6", 1)


def set_forwarding(lab, on):
    lab.sysctl("hv", "net.ipv4.ip_forward", int(on))
    lab.sysctl("hv", "net.ipv6.conf.all.forwarding", int(on))


def forwarding(lab):
    def read(path):
        with open(path) as f:
            return f.read().strip()
    with lab.netns("hv"):
        return read("/proc/sys/net/ipv4/ip_forward"), read("/proc/sys/net/ipv6/conf/all/forwarding")


# ---------------------------------------------------------------- checks

def start(lab, config, tag):
    return start_daemon(lab, config, tag, timeout=START_TIMEOUT)


def check_datapath(lab, p101, p200):
    v4, v6 = forwarding(lab)
    lab.check("kernel forwarding is off (ip_forward=0, ipv6 all.forwarding=0)", (v4, v6) == ("0", "0"),
              f"ip_forward={v4} all.forwarding={v6}")
    # 1. inner -> inner, connected neighbour.
    forward_check(lab, "ipv4 vlan 100 -> vlan 101 neighbour by tc (vid 101, dst=neighbour, src=p0.101 mac, "
                  "ttl 63, ipv4 csum, payload)",
                  from_blue("10.101.0.2", 41001, b"dpo-fp inner-inner v4"), 101, HOST101_MAC, p101)
    # 2. inner -> outer, no nat: default route via the VLAN 200 gateway.
    forward_check(lab, "ipv4 vlan 100 -> default via vlan 200 gateway, no nat (vid 200, gw mac, src ip kept, "
                  "ttl 63, csum)",
                  from_blue("203.0.113.5", 41002, b"dpo-fp inner-outer v4"), 200, GW_MAC, p200)
    # 3. IPv6.
    forward_check(lab, "ipv6 vlan 100 -> vlan 101 neighbour by tc (vid 101, macs, hop limit 63, payload)",
                  from_blue("fd00:101::2", 41003, b"dpo-fp inner-inner v6"), 101, HOST101_MAC, p101)
    forward_check(lab, "ipv6 vlan 100 -> default via vlan 200 gateway (vid 200, gw mac, hop limit 63)",
                  from_blue("2001:db8:5::5", 41004, b"dpo-fp inner-outer v6"), 200, GW_MAC, p200)


def check_ttl1(lab):
    """4. TTL / hop limit 1 go to the kernel untouched; it answers time exceeded (forwarding on)."""
    set_forwarding(lab, 1)
    try:
        payload = b"dpo-fp ttl 1"
        frame = from_blue("10.101.0.2", 41011, payload, ttl=1)
        cap = lab.capture("fabric", "fab0")
        lab.send("fabric", "fab0", frame)
        icmp = cap.expect(lambda p: ICMP in p and p[ICMP].type == 11 and UDPerror in p
                          and p[UDPerror].sport == 41011)
        name = "ipv4 ttl 1 -> kernel answers icmp time exceeded on vlan 100 (forwarding on)"
        if icmp is None:
            lab.check(name, False, f"no ICMP time exceeded seen; {cap.others_summary()}")
        else:
            bad = lab.mismatches([
                ("vlans", vlans(icmp), [100]), ("dst mac", icmp.dst, HOST100_MAC),
                ("src mac", icmp.src, SCENARIO_MACS["p0.100"]),
                ("src ip", icmp[IP].src, "10.100.0.1"), ("dst ip", icmp[IP].dst, "10.100.0.2"),
                ("icmp code", icmp[ICMP].code, 0), ("quoted dst", icmp[IPerror].dst, "10.101.0.2"),
                ("quoted ttl (as it arrived)", icmp[IPerror].ttl, 1)])
            lab.check(name, not bad, f"{bad} in {describe(icmp)}")
        leaked = [p for p in cap.others if payload_is(payload)(p)]
        leaked = leaked[0] if leaked else cap.expect_none(payload_is(payload), window=NOTHING_WINDOW)
        cap.close()
        lab.check(f"ipv4 ttl 1 not forwarded ({NOTHING_WINDOW:.0f} s window)", leaked is None,
                  f"forwarded anyway: {describe(leaked)}" if leaked is not None else "")

        frame = from_blue("fd00:101::2", 41012, b"dpo-fp hlim 1", ttl=1)
        got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0",
                                   lambda p: ICMPv6TimeExceeded in p and IPerror6 in p
                                   and UDPerror in p and p[UDPerror].sport == 41012)
        name = "ipv6 hop limit 1 -> kernel answers icmpv6 time exceeded on vlan 100 (forwarding on)"
        if got is None:
            lab.check(name, False, f"none seen; {cap.others_summary()}")
        else:
            bad = lab.mismatches([
                ("vlans", vlans(got), [100]), ("dst mac", got.dst, HOST100_MAC),
                ("src ip", got[IPv6].src, "fd00:100::1"), ("dst ip", got[IPv6].dst, "fd00:100::2"),
                ("quoted hop limit", got[IPerror6].hlim, 1)])
            lab.check(name, not bad, f"{bad} in {describe(got)}")
    finally:
        set_forwarding(lab, 0)


def check_unknown_vlan(lab):
    """5. VLAN 999 is not in the mapping: tc leaves it alone; the kernel gets it as it arrived."""
    payload = b"dpo-fp vlan 999"
    p0_mac = lab.mac("hv", "p0")   # p0.999 has p0's MAC
    frame = udp_frame(999, HOST100_MAC, p0_mac, "10.100.0.2", "10.101.0.2", 41021, payload)
    kernel = lab.capture("hv", "p0.999")
    wire = lab.capture("fabric", "fab0")
    try:
        lab.send("fabric", "fab0", frame)
        got = kernel.expect(payload_is(payload))
        untagged = bytes(frame)[:12] + bytes(frame)[16:]
        name = "unknown vlan 999 reaches the kernel (p0.999) exactly as sent, tag taken off by 8021q only"
        if got is None:
            lab.check(name, False, f"not seen on p0.999; {kernel.others_summary()}")
        else:
            lab.check(name, bytes(got) == untagged,
                      f"modified: got {describe(got)} ({bytes(got).hex()}) want {untagged.hex()}")
        leaked = wire.expect_none(payload_is(payload), window=NOTHING_WINDOW)
        lab.check(f"unknown vlan 999 not forwarded ({NOTHING_WINDOW:.0f} s window)", leaked is None,
                  f"came back: {describe(leaked)}" if leaked is not None else "")
    finally:
        kernel.close()
        wire.close()


def check_not_for_router(lab):
    """A frame on a mapped VLAN that is not addressed to the router's MAC (flooded unknown
    unicast, broadcast) is not routed: the kernel would not route it either."""
    payloads = []
    cap = lab.capture("fabric", "fab0")
    try:
        for dmac in ("02:00:00:00:01:99", "ff:ff:ff:ff:ff:ff"):
            payload = f"dpo-fp to {dmac}, not the router".encode()
            payloads.append(payload)
            lab.send("fabric", "fab0", udp_frame(100, HOST100_MAC, dmac, "10.100.0.2", "10.101.0.2",
                                                 41025, payload))
        leaked = cap.expect_none(lambda p: Raw in p and p[Raw].load in payloads, window=NOTHING_WINDOW)
    finally:
        cap.close()
    lab.check(f"vlan 100 frames to another host's mac / broadcast (not p0.100's) are not routed "
              f"({NOTHING_WINDOW:.0f} s window)", leaked is None,
              f"routed anyway: {describe(leaked)}" if leaked is not None else "")


class KernelEvents:
    """An rtnetlink socket in a netns, subscribed to IPv4 route and neighbour events: it
    timestamps the moment the kernel made a change (what the daemon hears too)."""

    RTMGRP_NEIGH, RTMGRP_IPV4_ROUTE = 0x4, 0x40

    def __init__(self, lab, ns):
        with lab.netns(ns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            self.sock.bind((0, self.RTMGRP_NEIGH | self.RTMGRP_IPV4_ROUTE))
        self.sock.setblocking(False)

    def wait(self, msg_type, timeout):
        """Monotonic time the first message of `msg_type` (AF_INET only) arrived, or None."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                select.select([self.sock], [], [], left)
                continue
            now = time.monotonic()
            off = 0
            while off + 17 <= len(data):
                length, typ = struct.unpack_from("=IH", data, off)
                if typ == msg_type and data[off + 16] == socket.AF_INET:
                    return now
                off += max((length + 3) & ~3, 16)

    def close(self):
        self.sock.close()


RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH = 24, 25, 28


def change_check(lab, daemon, name, cmd, event, make_frame, want, want_text):
    """Make a kernel change and probe until the fast path shows it: one check, with the
    latency from the kernel's netlink event to the first probe that came back changed."""
    daemon.skip_to_now()
    events = KernelEvents(lab, "hv")
    try:
        proc = subprocess.Popen(["ip", "-n", "hv"] + cmd.split(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        t_change = events.wait(event, timeout=10.0)
    finally:
        events.close()
    if t_change is None:
        proc.wait()
        return lab.check(name, False, f"`ip {cmd}`: no netlink event within 10 s "
                                      f"(exit {proc.returncode}: {proc.stderr.read().strip()})"), None
    got, times, probes, cap = probe_until(lab, make_frame, want, t_change)
    proc.wait()
    if proc.returncode != 0:
        return lab.check(name, False, f"`ip {cmd}` failed: {proc.stderr.read().strip()}"), None
    rec, _ = daemon.next_event("reconciled", 0.0 if got is None else 2.0)
    rec_s = f"; daemon: messages={rec.get('messages')} ms={rec.get('ms')}" if rec else ""
    old = sum(1 for p in cap.others if Raw in p and b" probe " in p[Raw].load)
    if got is None:
        return lab.check(name, False, f"`ip {cmd}`: {want_text} not seen within {CHANGE_LIMIT:.1f} s "
                                      f"({probes} probes, {old} came back unchanged){rec_s}; "
                                      f"{cap.others_summary()}"), None
    sent, latency = times
    lab.check(f"{name}: {latency * 1000:.0f} ms after the kernel's netlink event (changed probe sent at "
              f"+{sent * 1000:.0f} ms, {probes} probe(s), {old} came back unchanged{rec_s})",
              latency <= CHANGE_LIMIT, f"took {latency:.3f} s")
    return True, latency


def probe_frame(dst_ip, tag):
    return lambda seq: from_blue(dst_ip, 42000 + seq, f"dpo-fp {tag} probe {seq}".encode())


def is_probe(tag):
    return lambda p: Raw in p and p[Raw].load.startswith(f"dpo-fp {tag} probe ".encode())


def check_changes(lab, daemon, p101, p200):
    """6. Route add, route del, neighbour MAC change: each in the fast path within 1 s."""
    latencies = []
    # Baseline: 198.51.100.7 follows the default route to the VLAN 200 gateway.
    ok = forward_check(lab, "before the change: 198.51.100.7 goes via the vlan 200 gateway",
                       from_blue("198.51.100.7", 41031, b"dpo-fp before route add"), 200, GW_MAC, p200)
    if ok:
        ok, lat = change_check(
            lab, daemon, "route add 198.51.100.0/24 via 10.101.0.2 reflected (probes now on vlan 101)",
            "route add 198.51.100.0/24 via 10.101.0.2 dev p0.101", RTM_NEWROUTE,
            probe_frame("198.51.100.7", "radd"),
            lambda p: is_probe("radd")(p) and vlans(p) == [101] and p.dst == HOST101_MAC
            and p.src == p101 and p[IP].ttl == 63,
            "a probe on vlan 101 to the neighbour's mac")
        latencies.append(("route add", lat))
    if ok:
        ok, lat = change_check(
            lab, daemon, "route del 198.51.100.0/24 reflected (probes back via the vlan 200 gateway)",
            "route del 198.51.100.0/24 via 10.101.0.2 dev p0.101", RTM_DELROUTE,
            probe_frame("198.51.100.7", "rdel"),
            lambda p: is_probe("rdel")(p) and vlans(p) == [200] and p.dst == GW_MAC
            and p.src == p200 and p[IP].ttl == 63,
            "a probe on vlan 200 to the gateway's mac")
        latencies.append(("route del", lat))
    ok, lat = change_check(
        lab, daemon, f"neighbour 10.101.0.2 mac -> {HOST101_MAC_NEW} reflected",
        f"neigh replace 10.101.0.2 lladdr {HOST101_MAC_NEW} dev p0.101 nud permanent", RTM_NEWNEIGH,
        probe_frame("10.101.0.2", "neigh"),
        lambda p: is_probe("neigh")(p) and vlans(p) == [101] and p.dst == HOST101_MAC_NEW
        and p.src == p101 and p[IP].ttl == 63,
        "a probe to the new mac")
    latencies.append(("neighbour mac", lat))
    return latencies


def restore_check(lab, daemon, name, cmd, p101):
    """Somebody else changes our tc state; the daemon hears it (a tc notification, no
    dump) and puts it back: probes to 10.101.0.2 are forwarded again within 1 s."""
    daemon.skip_to_now()
    t_change = time.monotonic()
    lab.sh(cmd, ns="hv")
    got, times, probes, cap = probe_until(
        lab, probe_frame("10.101.0.2", "restore"),
        lambda p: is_probe("restore")(p) and vlans(p) == [101] and p.dst == HOST101_MAC_NEW and p.src == p101, t_change)
    rec, line = daemon.next_event("reconciled", 2.0, lambda f: f.get("added") not in (None, "0"))
    if got is None:
        return lab.check(name, False, f"`{' '.join(cmd)}`: probes not forwarded again within {CHANGE_LIMIT:.1f} s "
                                      f"({probes} probes); daemon: {line.strip()}")
    _sent, latency = times
    lab.check(f"{name}: forwarded again {latency * 1000:.0f} ms after `{' '.join(cmd)}` ({line.strip()})",
              latency <= CHANGE_LIMIT and rec is not None and rec.get("dumps") == "0",
              f"took {latency:.3f} s, want <= {CHANGE_LIMIT} s and no dump (dumps={rec.get('dumps') if rec else '?'})")


def check_foreign_changes(lab, daemon, p101):
    """6b. A rule of ours deleted by hand, then our clsact qdisc deleted: put back within 1 s."""
    host = [b for b in rule_blocks(tc_filters(lab, chain=RULE_CHAIN_INNER))
            if re.search(r"^\s*dst_ip 10\.101\.0\.2\b", b, re.M) and "vlan_ethtype ip" in b]
    if not lab.check("the host rule of 10.101.0.2 is in the inner chain", len(host) == 1,
                     f"{len(host)} found in chain {RULE_CHAIN_INNER}"):
        return
    head = host[0].splitlines()[0]
    pref, handle = re.search(r"pref (\d+)", head).group(1), re.search(r"handle (0x[0-9a-f]+)", head).group(1)
    restore_check(lab, daemon, "a rule deleted by hand is put back",
                  ["tc", "filter", "del", "dev", "p0", "ingress", "chain", str(RULE_CHAIN_INNER), "pref", pref,
                   "handle", handle, "protocol", "802.1Q", "flower"], p101)
    n = len(rule_blocks(tc_filters(lab)))
    restore_check(lab, daemon, f"the clsact qdisc deleted by hand (with all {n} rules) is made again, its rules "
                               "put back", ["tc", "qdisc", "del", "dev", "p0", "clsact"], p101)
    back = len(rule_blocks(tc_filters(lab)))
    lab.check(f"every rule is back after the qdisc ({back} of {n})", back == n, f"{back} rules, {n} before")
    # An operator's request: SIGUSR1 compares with a full dump now; nothing has drifted.
    daemon.skip_to_now()
    daemon.proc.send_signal(signal.SIGUSR1)
    rec, line = daemon.next_event("audit", 5.0, lambda f: f.get("reason") == "signal")
    lab.check(f"SIGUSR1: an audit on request finds no drift ({line.strip()})",
              rec is not None and rec.get("drift") == "0" and rec.get("dumps") not in (None, "0"),
              "want `audit reason=signal dumps>=1 drift=0`")


def check_restart(lab, config, daemon, p101):
    """7. SIGTERM leaves the rules (traffic keeps flowing); a restart sends zero changes."""
    before = tc_filters(lab)
    rc = daemon.stop()
    stopping = daemon.events("stopping")
    lab.check("SIGTERM: daemon exits 0 and logs stopping rules=\"left in place\"",
              rc == 0 and stopping and stopping[-1].get("rules") == "left in place",
              f"exit {rc}; log: {daemon.tail()}")
    daemon.kill()
    after_stop = tc_filters(lab)
    rules_before = rule_blocks(before)
    lab.check(f"rules stay installed with the daemon down ({len(rules_before)} filters, same as before)",
              rules_before and after_stop == before,
              f"{len(rule_blocks(after_stop))} filters now, {len(rules_before)} before")
    forward_check(lab, "daemon down: vlan 100 -> vlan 101 still forwarded by tc (ip_forward=0)",
                  from_blue("10.101.0.2", 41041, b"dpo-fp daemon down"), 101, HOST101_MAC_NEW, p101)

    daemon, rec = start(lab, config, "restart")
    if rec is None:
        return daemon
    lab.check(f"restart with nothing changed sends zero filter changes ({rec['_line'].strip()})",
              rec.get("messages") == "0" and rec.get("kept") == rec.get("rules")
              and all(rec.get(k) == "0" for k in ("added", "replaced", "deleted", "refused")),
              "want messages=0, kept=rules, added=replaced=deleted=refused=0")
    after = tc_filters(lab)
    changed = [rule_head(b) for b in rule_blocks(after) if b not in before]
    gone = [rule_head(b) for b in rule_blocks(before) if b not in after]
    lab.check(f"filters identical after the restart (handles, keys, actions of {len(rule_blocks(after))})",
              after == before, f"new or changed: {changed[:3]}; gone: {gone[:3]}")
    return daemon


def check_flush(lab, config, daemon):
    """8. With the daemon stopped, --flush removes every rule, and nothing is forwarded."""
    rc = daemon.stop()
    daemon.kill()
    n = len(rule_blocks(tc_filters(lab)))
    r = lab.sh(["ip", "netns", "exec", "hv", lab.daemon_path(), "--flush", "--config", config], check=False)
    ev, fields = parse_log_line(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")
    lab.check(f"dpoffloadd --flush exits 0 and deleted its {n} rules (daemon stopped: exit {rc})",
              r.returncode == 0 and ev == "flushed" and fields.get("deleted") == str(n),
              f"exit {r.returncode}; stderr: {r.stderr.strip()[-400:]}")
    left = tc_filters(lab)
    lab.check("after --flush `tc filter show dev p0 ingress` is empty", not left,
              f"{len(rule_blocks(left))} rule(s) left in {len(left) - len(rule_blocks(left))} chain/prio(s), "
              f"first: {[rule_head(b) for b in rule_blocks(left)[:3]]}")
    payload = b"dpo-fp after flush"
    leaked = lab.send_expect_none("fabric", "fab0", from_blue("10.101.0.2", 41051, payload),
                                  "fabric", "fab0", payload_is(payload), window=NOTHING_WINDOW)
    lab.check(f"after --flush vlan 100 -> vlan 101 is no longer forwarded ({NOTHING_WINDOW:.0f} s window, "
              "ip_forward=0)", leaked is None,
              f"forwarded anyway: {describe(leaked)}" if leaked is not None else "")


def run(lab):
    daemon_bin = lab.daemon_path()
    if not lab.check("dpoffloadd built (--build-dir)", daemon_bin is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    setup(lab)
    p101, p200 = SCENARIO_MACS["p0.101"], SCENARIO_MACS["p0.200"]
    fd, config = tempfile.mkstemp(prefix="fastpath_vlan-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING)
    daemon = None
    try:
        daemon, rec = start(lab, config, "first")
        if rec is None:
            return
        refused = daemon.events("rule-refused")
        lab.check(f"daemon started in hv and installed its rules in {rec['_s']} s "
                  f"(rules={rec.get('rules')} added={rec.get('added')} refused={rec.get('refused')})",
                  rec.get("refused") == "0" and not refused and int(rec.get("rules", 0)) > 0
                  and rec.get("added") == rec.get("rules"),
                  f"{rec['_line']}; refused: {refused[:2]}")
        lab.note(f"first pass: {rec['_line'].strip()}")

        check_datapath(lab, p101, p200)
        check_ttl1(lab)
        check_unknown_vlan(lab)
        check_not_for_router(lab)
        latencies = check_changes(lab, daemon, p101, p200)
        lab.note("change -> fast path latencies: "
                 + ", ".join(f"{what} {lat * 1000:.0f} ms" if lat is not None else f"{what} (not seen)"
                             for what, lat in latencies))
        check_foreign_changes(lab, daemon, p101)
        note_stats(lab, "before the restart")
        daemon = check_restart(lab, config, daemon, p101)
        note_stats(lab, "after the restart")
        check_flush(lab, config, daemon)
    finally:
        if daemon is not None:
            daemon.kill()
        os.unlink(config)

# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast path from `dpoffloadd --dry-run`: the compiler's tc rules, applied with tc, route on the wire.

    fabric netns                      hv netns (the hypervisor)
    fab0  <------------ veth ------------>  p0   (clsact: the dry-run's rules)
    (scapy sends and captures)              +- p0.100  blue    inner  10.100.0.1/24 fd00:100::1/64
                                            +- p0.101  red     inner  10.101.0.1/24 fd00:101::1/64
                                            +- p0.200  transit outer  10.200.0.1/24 fd00:200::1/64
                                            +- p0.999  not in the mapping (an "unknown VLAN")

Each VLAN interface has its own MAC, so "src MAC = the egress interface's MAC" is a real
check. Fabric hosts are static neighbours (HOSTS below); 10.50.0.0/16 and fd00:50::/48
go via a gateway on VLAN 101, the default routes via a gateway on VLAN 200. The mapping
file (no `nat` section) is generated into a temp dir, `dpoffloadd --dry-run` runs in the
hv namespace, and its commands are applied with tc after `tc qdisc add dev p0 clsact`.

Kernel forwarding is OFF (net.ipv4.ip_forward=0, net.ipv6.conf.all.forwarding=0), so a
routed frame on the fabric can only have come from the tc rules: the scenario shows
that first (nothing is routed before the rules are installed), then checks the flow
chart's groups on the wire, the per-egress counters, and what must be left to the
kernel untouched (TTL <= 1, unknown VLAN, the host's own address): those frames are
seen arriving on the hypervisor's VLAN sub-interface exactly as sent. At the end
forwarding is turned on to see the kernel answer TTL 1 with ICMP time exceeded.

Frames a router (the kernel's slow path) would not forward: a frame to another
station's MAC or to broadcast, martian addresses, a link-local IPv6 source are checks
(left to the kernel). A bad IPv4 header checksum and a packet over the egress VLAN's
MTU (p0.200 has mtu 1400 for that) are `  # known difference:` notes: flower cannot
match on either.
"""

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time

from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6TimeExceeded, IPv6, IPerror6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import describe, ipv4_checksum_ok, vlans

# Fabric hosts: (vid, ip) -> mac. Gateways are .254 / ::fe.
H100 = "02:00:00:00:64:02"
H101 = "02:00:00:00:65:02"
GW101 = "02:00:00:00:65:fe"
H200 = "02:00:00:00:c8:02"
GW200 = "02:00:00:00:c8:fe"
OTHER100 = "02:00:00:00:64:99"  # some other station on VLAN 100 (not the hypervisor)
HOSTS = [
    (100, "10.100.0.2", H100), (100, "fd00:100::2", H100),
    (101, "10.101.0.2", H101), (101, "fd00:101::2", H101),
    (101, "10.101.0.254", GW101), (101, "fd00:101::fe", GW101),
    (200, "10.200.0.2", H200), (200, "fd00:200::2", H200),
    (200, "10.200.0.254", GW200), (200, "fd00:200::fe", GW200),
]
UNKNOWN_VID = 999
TRANSIT_MTU = 1400
VLAN_MACS = {100: "02:00:00:10:00:64", 101: "02:00:00:10:00:65", 200: "02:00:00:10:00:c8",
             UNKNOWN_VID: "02:00:00:10:03:e7"}

MAPPING = {
    "uplink": "p0",
    "interfaces": [
        {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
        {"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101},
        {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200},
    ],
}

CHAIN_INNER, CHAIN_OUTER = 0x100, 0x200
EGRESS_COUNTER_BASE = 0xd9000000  # pipeline.hpp kEgressCounterVlanBase: mirred index = base + vid


# ---------------------------------------------------------------- helpers

def setup(lab):
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    cmds = []
    for vid in (100, 101, 200):
        dev = f"p0.{vid}"
        cmds += [
            f"link add link p0 name {dev} address {VLAN_MACS[vid]} type vlan id {vid}",
            f"addr add 10.{vid}.0.1/24 dev {dev}",
            f"addr add fd00:{vid}::1/64 dev {dev} nodad",
            f"link set {dev} up",
        ]
    cmds += [f"neigh replace {ip} lladdr {mac} dev p0.{vid} nud permanent" for vid, ip, mac in HOSTS]
    cmds += [
        "route add 10.50.0.0/16 via 10.101.0.254",
        "route add fd00:50::/48 via fd00:101::fe",
        "route add default via 10.200.0.254",
        "route add ::/0 via fd00:200::fe",
        # The outer VLAN has a smaller MTU than the inner ones (see findings()).
        f"link set p0.200 mtu {TRANSIT_MTU}",
        # A VLAN the mapping does not know: the kernel has a device for it, so a frame
        # that reaches the kernel on it can be seen there.
        f"link add link p0 name p0.{UNKNOWN_VID} address {VLAN_MACS[UNKNOWN_VID]} type vlan id {UNKNOWN_VID}",
        f"link set p0.{UNKNOWN_VID} addrgenmode none",
        f"link set p0.{UNKNOWN_VID} up",
    ]
    ip_batch(lab, "hv", cmds)
    set_forwarding(lab, 0)
    lab.sysctl("fabric", "net.ipv6.conf.fab0.disable_ipv6", 1)


def ip_batch(lab, ns, cmds):
    """`ip -n NS -batch -`: one process for many commands (each `ip netns exec` costs ~0.2 s
    under TCG); a failure raises with ip's message and line number."""
    lab.sh(["ip", "-n", ns, "-batch", "-"], input="".join(c + "\n" for c in cmds))


def set_forwarding(lab, on):
    lab.sysctl("hv", "net.ipv4.ip_forward", on)
    lab.sysctl("hv", "net.ipv6.conf.all.forwarding", on)


class Probe:
    """One UDP test frame from the fabric into the hypervisor's uplink."""

    _sport = 41000

    def __init__(self, label, vid, src, dst, ttl=64, eth_dst=None, eth_src=None, bad_csum=False, l3_len=0):
        Probe._sport += 1
        self.label, self.vid, self.src, self.dst, self.ttl = label, vid, src, dst, ttl
        self.sport = Probe._sport
        self.v6 = ":" in dst
        self.payload = f"dpo-lab {label} #{self.sport}".encode()
        headers = (40 if self.v6 else 20) + 8
        if l3_len > headers + len(self.payload):
            self.payload += b"." * (l3_len - headers - len(self.payload))
        l3 = (IPv6(src=src, dst=dst, hlim=ttl) if self.v6 else IP(src=src, dst=dst, ttl=ttl, flags="DF"))
        if bad_csum:
            l3.chksum = 0x1234
        self.eth_src = eth_src or {100: H100, 101: H101, 200: H200}.get(vid, H100)
        self.eth_dst = eth_dst or VLAN_MACS.get(vid, VLAN_MACS[100])
        self.frame = (Ether(src=self.eth_src, dst=self.eth_dst) / Dot1Q(vlan=vid) / l3
                      / UDP(sport=self.sport, dport=5001) / self.payload)
        self.sent = Ether(bytes(self.frame))

    def ip(self, p):
        return p[IPv6] if self.v6 else p[IP]

    def is_it(self, p):
        """The frame itself (forwarded or not), never an ICMP error quoting it."""
        if ICMP in p or IPerror in p or IPerror6 in p:
            return False
        l3 = IPv6 if self.v6 else IP
        return (l3 in p and p[l3].src == self.src and p[l3].dst == self.dst and UDP in p
                and p[UDP].sport == self.sport and Raw in p and p[Raw].load == self.payload)


def routed_problems(lab, probe, got, vid_out, dst_mac):
    """What is wrong with a frame the fast path routed (empty string: nothing)."""
    ip = probe.ip(got)
    pairs = [
        ("vlans", vlans(got), [vid_out]),
        ("dst mac", got.dst, dst_mac),
        ("src mac", got.src, VLAN_MACS[vid_out]),
        ("hop limit" if probe.v6 else "ttl", ip.hlim if probe.v6 else ip.ttl, probe.ttl - 1),
        ("src ip", ip.src, probe.src), ("dst ip", ip.dst, probe.dst),
        ("udp checksum", got[UDP].chksum, probe.sent[UDP].chksum),
        ("payload", got[Raw].load, probe.payload),
    ]
    if not probe.v6:
        pairs.append(("ipv4 header checksum valid", ipv4_checksum_ok(got), True))
    return lab.mismatches(pairs)


def expect_routed(lab, name, probe, vid_out, dst_mac, counts=None):
    got, cap = lab.send_expect("fabric", "fab0", probe.frame, "fabric", "fab0", probe.is_it)
    if got is None:
        return lab.check(name, False, f"not routed: no frame on fab0 within the timeout; {cap.others_summary()}")
    if counts is not None:
        counts[vid_out] = counts.get(vid_out, 0) + 1
    bad = routed_problems(lab, probe, got, vid_out, dst_mac)
    return lab.check(name, not bad, f"{bad} in {describe(got)}")


def collect(cap, window):
    """Every frame `cap` reads within `window` seconds (the one bounded wait)."""
    cap.expect(lambda p: False, timeout=window)
    frames, cap.others = cap.others, []
    return frames


def arrived_unchanged(lab, probe, frames):
    """Problems with how `probe` reached the kernel on its VLAN device, or None if it did not."""
    mine = [p for p in frames if probe.is_it(p)]
    if not mine:
        return None
    p = mine[0]
    ip = probe.ip(p)
    return lab.mismatches([
        ("vlans (8021q took the tag off)", vlans(p), []),
        ("dst mac", p.dst, probe.eth_dst), ("src mac", p.src, probe.eth_src),
        ("hop limit" if probe.v6 else "ttl", ip.hlim if probe.v6 else ip.ttl, probe.ttl),
    ]) or ""


def tc_json(lab, args):
    r = lab.sh(["tc", "-n", "hv", "-s", "-j", *args])
    return json.loads(r.stdout or "[]")


def filters(lab):
    """The uplink's ingress filters, flattened: chain, prio, keys, flags, packets, action kinds."""
    out = []
    for f in tc_json(lab, ["filter", "show", "dev", "p0", "ingress"]):
        opt = f.get("options")
        if not opt:
            continue
        acts = opt.get("actions", [])
        pkts = acts[0].get("stats", {}).get("packets", 0) if acts else 0
        out.append({"chain": f.get("chain", 0), "prio": f.get("pref"), "keys": opt.get("keys", {}),
                    "in_hw": bool(opt.get("in_hw")), "not_in_hw": bool(opt.get("not_in_hw")),
                    "packets": pkts, "actions": [a.get("kind") for a in acts]})
    return out


def describe_filter(f):
    keys = " ".join(f"{k} {v}" for k, v in f["keys"].items() if k != "eth_type")
    flags = ("in_hw " if f["in_hw"] else "") + ("not_in_hw" if f["not_in_hw"] else "")
    return (f"chain {f['chain']} prio {f['prio']} {keys or '(any)'} -> {'+'.join(f['actions'])}: "
            f"{f['packets']} pkt, {flags.strip() or 'no hw flag'}")


def find_filter(fs, chain, prio, **keys):
    for f in fs:
        if f["chain"] == chain and f["prio"] == prio and all(str(f["keys"].get(k)) == str(v)
                                                             for k, v in keys.items()):
            return f
    return None


# ---------------------------------------------------------------- the dry run and tc

def dry_run(lab, tmp):
    """Run dpoffloadd --dry-run in hv; [(why, command)] or None (reported)."""
    daemon = lab.daemon_path()
    if not daemon:
        lab.check("dpoffloadd --dry-run ran", False, "no <build-dir>/agent/dpoffloadd (run with --build-dir)")
        return None
    path = os.path.join(tmp, "mapping.json")
    with open(path, "w") as f:
        json.dump(MAPPING, f, indent=2)
    r = lab.sh([daemon, "--dry-run", "--config", path], ns="hv", check=False)
    if r.returncode != 0:
        lab.check("dpoffloadd --dry-run ran", False, f"exit {r.returncode}: {r.stderr.strip()}")
        return None
    cmds, why = [], ""
    for line in r.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# note:") or line.startswith("# dpoffloadd"):
                lab.note(f"dry-run: {line[2:]}")
            else:
                why = line[2:]
            continue
        cmds.append((why, line))
    lab.check(f"dpoffloadd --dry-run printed {len(cmds)} tc commands, each a `tc filter add dev p0 ingress`",
              cmds and all(c.startswith("tc filter add dev p0 ingress ") for _, c in cmds),
              f"unexpected output: {r.stdout[-500:]}")
    return cmds


def install(lab, tmp, cmds):
    """Apply the commands; one FAIL per refused command with tc's own words. True if all went in."""
    lab.sh("tc -n hv qdisc add dev p0 clsact")
    t0 = time.monotonic()
    batch = os.path.join(tmp, "rules.tc")
    with open(batch, "w") as f:
        for _, c in cmds:
            f.write(c[len("tc "):] + "\n")
    r = lab.sh(["tc", "-n", "hv", "-force", "-batch", batch], check=False)
    if r.returncode == 0:
        lab.note(f"{len(cmds)} rules installed with one `tc -batch` in {time.monotonic() - t0:.1f} s")
        return lab.check(f"all {len(cmds)} dry-run commands accepted by tc (6.1 kernel, iproute2 "
                         f"{tc_version(lab)})", True)
    # Something was refused: start over one command at a time, for tc's message per command
    # (a parse error ends a whole batch: iproute2's invarg() exits).
    lab.sh("tc -n hv qdisc del dev p0 clsact")
    lab.sh("tc -n hv qdisc add dev p0 clsact")
    refused = 0
    for why, c in cmds:
        with lab.netns("hv"):
            rr = subprocess.run(shlex.split(c), capture_output=True, text=True, timeout=30)
        if rr.returncode != 0:
            refused += 1
            lab.check(f"tc accepts: {c}", False,
                      f"({why}) tc exit {rr.returncode}: {(rr.stderr or rr.stdout).strip()}")
    lab.note(f"{refused} of {len(cmds)} commands refused (one at a time, {time.monotonic() - t0:.1f} s)")
    return refused == 0


def tc_version(lab):
    return lab.sh("tc -V").stdout.split("iproute2-")[-1].split(",")[0].strip()


# ---------------------------------------------------------------- the scenario

def run(lab):
    tmp = tempfile.mkdtemp(prefix="dpo-fastpath-")
    try:
        scenario(lab, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scenario(lab, tmp):
    setup(lab)

    # 0. Forwarding is off: without rules the hypervisor routes nothing.
    before = [Probe("before rules v4 100->101", 100, "10.100.0.2", "10.101.0.2"),
              Probe("before rules v6 100->101", 100, "fd00:100::2", "fd00:101::2")]
    cap = lab.capture("fabric", "fab0")
    for p in before:
        lab.send("fabric", "fab0", p.frame)
    seen = collect(cap, 1.0)
    cap.close()
    leaked = [f for f in seen if any(p.is_it(f) for p in before)]
    lab.check("without tc rules (ip_forward=0, ipv6 forwarding=0) nothing is routed 100 -> 101 (1 s window)",
              not leaked, f"routed anyway: {describe(leaked[0])}" if leaked else "")

    # 1. The compiler's rules, as printed, go into the kernel.
    cmds = dry_run(lab, tmp)
    if not cmds:
        return
    install(lab, tmp, cmds)
    fs = filters(lab)
    lab.check(f"the kernel holds one filter per command ({len(cmds)})", len(fs) == len(cmds),
              f"tc filter show lists {len(fs)}")

    # 2. On the wire: groups 1-5 (ingress, iface = f(vlan), routing, re-tag, egress).
    counts = {}
    expect_routed(lab, "ipv4 inner 100 -> inner 101 neighbour 10.101.0.2 (vid 101, dst mac = neighbour, "
                  "src mac = p0.101, ttl 63, ip checksum, payload)",
                  Probe("v4 100->101", 100, "10.100.0.2", "10.101.0.2"), 101, H101, counts)
    expect_routed(lab, "ipv4 inner 100 -> 10.50.7.9 via gateway 10.101.0.254 (gateway's mac, vid 101)",
                  Probe("v4 100->gw101", 100, "10.100.0.2", "10.50.7.9"), 101, GW101, counts)
    expect_routed(lab, "ipv4 inner 100 -> outer default route (vid 200, gateway mac, no NAT: src ip kept)",
                  Probe("v4 100->default", 100, "10.100.0.2", "198.51.100.7"), 200, GW200, counts)
    expect_routed(lab, "ipv4 outer 200 -> inner 100 neighbour (chain 512)",
                  Probe("v4 200->100", 200, "203.0.113.5", "10.100.0.2"), 100, H100, counts)
    expect_routed(lab, "ipv4 ttl 2 is routed with ttl 1 (ip_ttl 0x00/0xfe does not match 2)",
                  Probe("v4 ttl 2", 100, "10.100.0.2", "10.101.0.2", ttl=2), 101, H101, counts)
    expect_routed(lab, "ipv4 ttl 255 -> 254 (pedit ip ttl add 255 leaves the protocol byte alone)",
                  Probe("v4 ttl 255", 101, "10.101.0.2", "10.100.0.2", ttl=255), 100, H100, counts)
    expect_routed(lab, "ipv6 inner 100 -> inner 101 neighbour (vid 101, macs, hop limit 63, payload)",
                  Probe("v6 100->101", 100, "fd00:100::2", "fd00:101::2"), 101, H101, counts)
    expect_routed(lab, "ipv6 inner 100 -> fd00:50::9 via gateway fd00:101::fe (gateway's mac)",
                  Probe("v6 100->gw101", 100, "fd00:100::2", "fd00:50::9"), 101, GW101, counts)
    expect_routed(lab, "ipv6 inner 100 -> outer default route (vid 200, gateway mac, hop limit 63)",
                  Probe("v6 100->default", 100, "fd00:100::2", "2001:db8::1"), 200, GW200, counts)
    expect_routed(lab, "ipv6 hop limit 2 is routed with hop limit 1 (pedit ip6 hoplimit add 255)",
                  Probe("v6 hlim 2", 200, "2001:db8::1", "fd00:100::2", ttl=2), 100, H100, counts)

    # 3. It was tc: the rules counted it, and the shared egress action counted per VLAN.
    fs = filters(lab)
    hit = {c: sum(f["packets"] for f in fs if f["chain"] == c) for c in (0, 1, CHAIN_INNER, CHAIN_OUTER)}
    lab.check("forwarding came from tc: chain 0, 1, 256 and 512 counters went up "
              f"(tc -s filter show dev p0 ingress: {hit})",
              all(hit[c] > 0 for c in hit), f"hits per chain {hit}")
    r101 = find_filter(fs, CHAIN_INNER, 100, dst_ip="10.101.0.2")
    lab.check("chain 256 prio 100 dst_ip 10.101.0.2 (the neighbour rule) counted the 2 frames sent to it",
              r101 is not None and r101["packets"] == 2,
              describe_filter(r101) if r101 else "rule not found in the dump")
    acts = tc_json(lab, ["actions", "ls", "action", "mirred"])
    egress = {}
    for entry in acts:
        for a in entry.get("actions", []):
            egress[a.get("index", 0) - EGRESS_COUNTER_BASE] = a.get("stats", {}).get("packets", 0)
    lab.check(f"per-egress-interface counters (shared mirred index 0xd9000000+vid) = frames routed {counts}",
              {k: v for k, v in egress.items() if v} == counts, f"mirred counters {egress}")

    # 4. Left to the kernel, untouched: nothing forwarded, and the kernel sees the frame as sent.
    kernel_cases = [
        (Probe("ttl 1", 100, "10.100.0.2", "10.101.0.2", ttl=1), 100,
         "ipv4 ttl 1 (route exists) left to the kernel: not forwarded, arrives on p0.100 unchanged"),
        (Probe("ttl 0", 100, "10.100.0.2", "10.101.0.2", ttl=0), 100,
         "ipv4 ttl 0 left to the kernel: not forwarded, arrives on p0.100 unchanged"),
        (Probe("hlim 1", 100, "fd00:100::2", "fd00:101::2", ttl=1), 100,
         "ipv6 hop limit 1 left to the kernel: not forwarded, arrives on p0.100 unchanged"),
        (Probe("hlim 0", 100, "fd00:100::2", "fd00:101::2", ttl=0), 100,
         "ipv6 hop limit 0 left to the kernel: not forwarded, arrives on p0.100 unchanged"),
        (Probe("to host", 100, "10.100.0.2", "10.100.0.1"), 100,
         "ipv4 to the hypervisor's own 10.100.0.1 not forwarded, arrives on p0.100 unchanged"),
        (Probe("to host on another vlan", 100, "10.100.0.2", "10.101.0.1"), 100,
         "ipv4 to the hypervisor's 10.101.0.1 (address of another VLAN) not forwarded, reaches p0.100"),
        (Probe("to host v6", 100, "fd00:100::2", "fd00:100::1"), 100,
         "ipv6 to the hypervisor's own fd00:100::1 not forwarded, arrives on p0.100 unchanged"),
        (Probe("unknown vlan", UNKNOWN_VID, "10.100.0.2", "10.101.0.2"), UNKNOWN_VID,
         f"unknown VLAN {UNKNOWN_VID} not forwarded, reaches the kernel (p0.{UNKNOWN_VID}) unchanged"),
        (Probe("unknown vlan v6", UNKNOWN_VID, "fd00:100::2", "fd00:101::2"), UNKNOWN_VID,
         f"ipv6 on unknown VLAN {UNKNOWN_VID} not forwarded, reaches p0.{UNKNOWN_VID} unchanged"),
        (Probe("connected no neighbour", 100, "10.100.0.2", "10.101.0.77"), 100,
         "ipv4 to a connected address without neighbour (10.101.0.77) left to the kernel, unchanged"),
    ]
    fab = lab.capture("fabric", "fab0")
    hv_caps = {vid: lab.capture("hv", f"p0.{vid}") for vid in {v for _, v, _ in kernel_cases}}
    for probe, _, _ in kernel_cases:
        lab.send("fabric", "fab0", probe.frame)
    on_wire = collect(fab, 1.0)
    fab.close()
    in_kernel = {vid: collect(c, 0.2) for vid, c in hv_caps.items()}
    for c in hv_caps.values():
        c.close()
    for probe, vid, name in kernel_cases:
        out = [f for f in on_wire if probe.is_it(f)]
        why = arrived_unchanged(lab, probe, in_kernel[vid])
        if out:
            lab.check(name, False, f"forwarded: {describe(out[0])}")
        elif why is None:
            lab.check(name, False, f"not forwarded, but never seen on p0.{vid} either "
                                   f"({len(in_kernel[vid])} other frames there)")
        else:
            lab.check(name, not why, f"reached p0.{vid} changed: {why}")
    fs = filters(lab)
    for prio, what in ((1, "ipv4 ttl"), (2, "ipv6 hop limit")):
        rule = find_filter(fs, CHAIN_INNER, prio)
        lab.check(f"the {what} <= 1 rule (chain 256 prio {prio}, ip_ttl 0x00/0xfe) counted exactly the "
                  f"two frames with {what} 1 and 0", rule is not None and rule["packets"] == 2,
                  describe_filter(rule) if rule else "rule not found")
    for prio in (1, 2):
        raw = lab.sh(f"tc -n hv -s filter show dev p0 ingress chain {CHAIN_INNER} prio {prio}").stdout
        for line in raw.splitlines():
            if line.strip() and not line.strip().startswith(("backlog", "random", "index")):
                lab.note(f"  | {line.rstrip()}")

    # 5. Frames a router would not forward.
    findings(lab)

    # 6. With forwarding on, the kernel (not tc) answers TTL 1 with time exceeded.
    set_forwarding(lab, 1)
    p = Probe("ttl 1 fwd on", 100, "10.100.0.2", "10.101.0.2", ttl=1)
    got, cap = lab.send_expect("fabric", "fab0", p.frame, "fabric", "fab0",
                               lambda f: ICMP in f and f[ICMP].type == 11 and UDPerror in f
                               and f[UDPerror].sport == p.sport)
    bad = "no ICMP time exceeded seen; " + cap.others_summary() if got is None else lab.mismatches([
        ("vlans", vlans(got), [100]), ("dst mac", got.dst, H100), ("src mac", got.src, VLAN_MACS[100]),
        ("src ip", got[IP].src, "10.100.0.1"), ("quoted ttl", got[IPerror].ttl, 1)])
    lab.check("with ip_forward=1 and the rules in: ttl 1 -> the kernel's icmp time exceeded on vlan 100", not bad,
              f"{bad} in {describe(got)}" if got is not None else bad)
    p6 = Probe("hlim 1 fwd on", 100, "fd00:100::2", "fd00:101::2", ttl=1)
    got, cap = lab.send_expect("fabric", "fab0", p6.frame, "fabric", "fab0",
                               lambda f: ICMPv6TimeExceeded in f and UDPerror in f
                               and f[UDPerror].sport == p6.sport)
    bad = "none seen; " + cap.others_summary() if got is None else lab.mismatches([
        ("vlans", vlans(got), [100]), ("dst mac", got.dst, H100), ("src ip", got[IPv6].src, "fd00:100::1")])
    lab.check("with forwarding=1: hop limit 1 -> the kernel's icmpv6 time exceeded on vlan 100", not bad,
              f"{bad} in {describe(got)}" if got is not None else bad)
    set_forwarding(lab, 0)

    # 7. The state of the rules, for the log: flags and counters.
    fs = filters(lab)
    n_in, n_not = sum(f["in_hw"] for f in fs), sum(f["not_in_hw"] for f in fs)
    lab.note(f"tc -s filter show dev p0 ingress: {len(fs)} filters, {n_in} in_hw, {n_not} not_in_hw; "
             f"hit ones:")
    for f in fs:
        if f["packets"]:
            lab.note("  " + describe_filter(f))
    lab.note(f"  ({sum(1 for f in fs if not f['packets'])} filters never hit)")
    lab.check("every filter reports not_in_hw (software only: veth has no offload), none in_hw",
              n_not == len(fs) and n_in == 0, f"{n_in} in_hw, {n_not} not_in_hw of {len(fs)}")


def findings(lab):
    """Frames a router does not forward. The compiler leaves most of them to the kernel:
    those are checks. A wrong IPv4 header checksum and a packet over the egress MTU are
    known differences (flower cannot match either): those stay notes."""
    big = TRANSIT_MTU + 50
    cases = [
        (Probe("foreign dst mac", 100, "10.100.0.2", "10.101.0.2", eth_dst=OTHER100),
         f"frame on VLAN 100 addressed to another station's MAC ({OTHER100}), IP dst 10.101.0.2: "
         "the kernel drops it (PACKET_OTHERHOST)", True),
        (Probe("broadcast dst mac", 100, "10.100.0.2", "10.101.0.2", eth_dst="ff:ff:ff:ff:ff:ff"),
         "frame to the broadcast MAC with unicast IP dst 10.101.0.2: a router does not route it", True),
        (Probe("loopback dst", 100, "10.100.0.2", "127.0.0.2"),
         "IPv4 dst 127.0.0.2 (martian; only 127.0.0.1/32 is a host rule): the kernel drops it", True),
        (Probe("zeronet dst", 100, "10.100.0.2", "0.0.0.5"),
         "IPv4 dst 0.0.0.5 (martian destination): the kernel drops it", True),
        (Probe("loopback src", 100, "127.0.0.1", "10.101.0.2"),
         "IPv4 src 127.0.0.1 (martian source): the kernel drops it", True),
        (Probe("link-local src v6", 100, "fe80::2", "fd00:101::2"),
         "IPv6 from link-local fe80::2 to fd00:101::2: the kernel never forwards a link-local source", True),
        (Probe("bad ip checksum", 100, "10.100.0.2", "10.101.0.2", bad_csum=True),
         "IPv4 with a wrong header checksum: the kernel drops it (ip_rcv); csum iph repairs it", False),
        (Probe("over egress mtu", 100, "10.100.0.2", "198.51.100.7", l3_len=big),
         f"IPv4 DF, {big} bytes, toward p0.200 (mtu {TRANSIT_MTU}): the kernel answers frag needed", False),
        (Probe("over egress mtu v6", 100, "fd00:100::2", "2001:db8::1", l3_len=big),
         f"IPv6, {big} bytes, toward p0.200 (mtu {TRANSIT_MTU}): the kernel answers packet too big", False),
    ]
    cap = lab.capture("fabric", "fab0")
    for probe, _, _ in cases:
        lab.send("fabric", "fab0", probe.frame)
    seen = collect(cap, 1.0)
    cap.close()
    for probe, what, handled in cases:
        out = [f for f in seen if probe.is_it(f)]
        if handled:
            lab.check(f"left to the kernel, not routed by tc: {what} (1 s window)", not out,
                      f"came out as {describe(out[0])}" if out else "")
        elif out:
            lab.note(f"known difference: ROUTED by tc: {what}; came out as {describe(out[0])}, {len(out[0])} bytes")
        else:
            lab.note(f"known difference now gone: not routed: {what}: make it a check")

# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast path for EVPN and Cisco ACI: dpoffloadd's tc rules on the uplink (VLAN side) and on
the metadata-mode VXLAN device vxlan0 (decapsulated side) route between VLAN, EVPN and ACI
interfaces, and source-NAT EVPN inner -> VLAN outer, with kernel forwarding off.

Topology: test/lab/vxlan_hypervisor.py (the slow path of scenario slowpath_vxlan):

    fab0 (scapy) <-- veth --> p0 (hv): p0 10.0.1.1 EVPN VTEP, p0.2 10.0.2.1 ACI VTEP,
    p0.100 blue (inner), p0.200 transit (outer, default routes); vxlan0 (external
    vnifilter) in br0: svi-green VNI 5001 EVPN (inner), svi-web VNI 6001 ACI (inner),
    svi-other VNI 7001 (the kernel's, not in the mapping).

The daemon's rules (docs/vxlan-plan.md, lib/core/compile/pipeline.hpp): on vxlan0's clsact
ingress, chain 0 prio 1 matches enc_key_id (VNI), enc_dst_ip (local VTEP), enc_dst_port
4789 and the SVI's MAC and jumps to the routing chains 0x10000 + the uplink's (0x10100
inner, 0x10200 outer); toward EVPN / ACI the tail is pedit + csum + (vlan pop) +
tunnel_key set + mirred to vxlan0.

Kernel forwarding is OFF (net.ipv4.ip_forward=0, net.ipv6.conf.all.forwarding=0) for every
forwarding check: a frame that comes back routed was routed by tc. It is turned on only
where the kernel must act (VNI 7001, TTL 1), and off again after.
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import time

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

import vxlan_hypervisor as vh
from labkit import parse_log_line, start_daemon

MAPPING = """{ "uplink": "p0", "vxlan": { "device": "vxlan0", "port": 4789 },
  "aci": { "vlan": 2, "local_vtep": "10.0.2.1" }, "evpn": { "local_vtep": "10.0.1.1" },
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100",    "role": "inner", "vlan": 100 },
    { "name": "green",   "netdev": "svi-green", "role": "inner", "evpn": { "vni": 5001, "remote_vtep": "10.0.1.2" } },
    { "name": "web",     "netdev": "svi-web",   "role": "inner", "aci":  { "vni": 6001, "remote_vtep": "10.0.2.10" } },
    { "name": "transit", "netdev": "p0.200",    "role": "outer", "vlan": 200 } ],
  "nat": { "zone": 1, "pool": ["198.51.100.0/30"], "ports": {"first": 1024, "last": 2047}, "chunk_size": 512,
           "max_chunks_per_subscriber": 2, "chunk_idle_seconds": 30 } }
"""

POOL = [f"198.51.100.{i}" for i in range(4)]
SUB = "10.1.0.2"              # the subscriber: green's host, behind EVPN VTEP 10.0.1.2
REMOTE = "203.0.113.9"        # a server outside, via the transit gateway
STRANGER = "203.0.113.66"     # sends what nobody asked for

START_TIMEOUT = 20.0          # daemon start to its first `reconciled` line (TCG is slow)
FIRST_TIMEOUT = 5.0           # a first packet: punted, chunk pulled, rule installed, put back
NOTHING_WINDOW = 1.0
DEVICES = ("p0", "vxlan0", "dpo-inject", "dpo-punt")  # the punt pair's rules are the program's too


# ---------------------------------------------------------------- tc

def filters_text(lab, dev):
    """`tc filter show dev DEV ingress` without statistics: what a restart must leave identical."""
    return lab.sh(["tc", "filter", "show", "dev", dev, "ingress"], ns="hv", check=False).stdout


def decap_hits(lab):
    return {vni: r.pkts for vni, r in vh.decap_rules(lab).items()}


def note_vxlan_counters(lab, when):
    rs = vh.rules(lab, "vxlan0")
    chains = sorted({r.chain for r in rs})
    lab.note(f"tc -s filter show dev vxlan0 ingress ({when}): {len(rs)} rules in chains "
             + ", ".join(f"{c:#x} ({sum(1 for r in rs if r.chain == c)} rules, "
                         f"{sum(r.pkts for r in rs if r.chain == c)} pkt)" for c in chains))
    for r in rs:
        if r.pkts or r.chain == 0:
            lab.note("  " + r.summary())


# ---------------------------------------------------------------- frames

def outer_udp(src, sport, dst, dport, payload):
    """A packet from outside arriving on VLAN 200 from the transit gateway."""
    t = vh.SEGMENTS["transit"]
    return (Ether(src=t.host_mac, dst=t.mac) / Dot1Q(vlan=t.vid) / IP(src=src, dst=dst, ttl=64)
            / UDP(sport=sport, dport=dport) / payload)


def green_tcp_syn(sport, dst, dport, seq):
    return vh.host_frame("green", dst, sport, b"", l4=TCP(sport=sport, dport=dport, flags="S", seq=seq,
                                                          window=64240))


def send_get(lab, frame, match, timeout=5.0):
    cap = lab.capture(vh.FAB_NS, vh.FAB_DEV)
    try:
        t0 = time.time()
        lab.send(vh.FAB_NS, vh.FAB_DEV, frame)
        got = cap.expect(match, timeout)
        return got, (got.time - t0 if got is not None else None), cap.others_summary()
    finally:
        cap.close()


# ---------------------------------------------------------------- checks

class Run:
    def __init__(self, lab, config):
        self.lab, self.config = lab, config
        self.daemons, self.daemon = [], None
        self.chunk = None            # (public, lo, hi) of SUB
        self.flow = None             # (sport, public, public port) of SUB's first UDP flow
        self.timings = []
        self.built = None            # what vh.build returned (its command lines among it)


def check_start(run, rec):
    lab, d = run.lab, run.daemon
    vh.reconciled_check(lab, "daemon started in hv and reconciled", d, rec)
    lab.note(f"first pass: {rec['_line']}")
    for l in d.lines():
        ev, _f = parse_log_line(l)
        if ev not in ("reconciled",):
            lab.note(f"daemon: {l.strip()}"[:400])
    vh.forwarding_off_check(lab)
    per_dev = {dev: vh.rules(lab, dev) for dev in DEVICES}
    vx = per_dev["vxlan0"]
    lab.check(f"tc filter show dev vxlan0 ingress is not empty ({len(vx)} rules)", bool(vx), "no rule on vxlan0")
    installed = sum(len(v) for v in per_dev.values())
    lab.check(f"every rule of the daemon is installed: rules={rec.get('rules')} = {installed} filters on "
              + " + ".join(f"{dev} {len(v)}" for dev, v in per_dev.items()),
              str(installed) == rec.get("rules"), f"rules={rec.get('rules')}, installed {installed}")
    # The decap rules: one per EVPN / ACI interface of the mapping, none for VNI 7001.
    inner_chain = vh.CHAIN_VXLAN_BASE + vh.CHAIN_INNER
    want = {"5001": ("10.0.1.1", vh.SEGMENTS["green"].mac, inner_chain),
            "6001": ("10.0.2.1", vh.SEGMENTS["web"].mac, inner_chain)}
    bad = vh.decap_mismatches(vh.decap_rules(lab), want)
    lab.check("vxlan0 chain 0 prio 1: decap rules for vni 5001 (enc_dst_ip 10.0.1.1) and 6001 (10.0.2.1), "
              "enc_dst_port 4789, dst_mac = the SVI's, goto chain 0x10100; none for 7001",
              not bad, "; ".join(bad) + f"; chain 0 rules: {[r.summary() for r in vx if r.chain == 0]}")
    inner = [r for r in vx if r.chain == inner_chain]
    tunnels = sorted({m for r in inner for m in re.findall(r"key_id (\d+)", r.block)})
    lab.check(f"vxlan0 chain 0x10100 (inner routing) has rules ({len(inner)}), with tunnel_key set toward "
              f"VNIs {tunnels}", bool(inner) and "5001" in tunnels and "6001" in tunnels,
              f"{len(inner)} rules; tunnel_key VNIs {tunnels}")
    lab.note("filters per device and chain: " + "; ".join(
        f"{dev}: " + ", ".join(f"{c:#x}={sum(1 for r in v if r.chain == c)}" for c in sorted({r.chain for r in v}))
        for dev, v in per_dev.items() if v))


def egress_counters(lab):
    return {"vlan 100": vh.action_pkts(lab, "mirred", vh.EGRESS_VLAN + 100),
            "evpn vni 5001": vh.action_pkts(lab, "mirred", vh.EGRESS_VXLAN + 5001),
            "aci vni 6001": vh.action_pkts(lab, "mirred", vh.EGRESS_VXLAN + 6001)}


def check_dry_run(lab, config):
    """`dpoffloadd --dry-run` prints what the daemon would install as tc commands: each must
    be one `tc` accepts on this kernel, the VXLAN device's decap and encap rules included.
    Installed and removed again before the daemon starts (it would adopt nothing of them:
    tc commands carry no owner cookie)."""
    r = lab.sh([lab.daemon_path(), "--dry-run", "--config", config], ns="hv", check=False)
    cmds = [l.strip() for l in r.stdout.splitlines() if l.strip() and not l.strip().startswith("#")]
    bad = []
    for d in ("p0", "vxlan0"):
        lab.sh(["tc", "qdisc", "add", "dev", d, "clsact"], ns="hv", check=False)
    # One tc process for all (TCG makes a process per command slow); -force goes on
    # after an error and names each failed line.
    batch = "".join(c[len("tc "):] + "\n" for c in cmds if c.startswith("tc "))
    p = lab.sh(["tc", "-force", "-batch", "-"], ns="hv", check=False, input=batch)
    for m in re.finditer(r"Command failed -:(\d+)", p.stderr):
        n = int(m.group(1))
        bad.append(f"{cmds[n - 1] if 0 < n <= len(cmds) else '?'}: {p.stderr.strip()[-200:]}")
    if p.returncode != 0 and not bad:
        bad.append(f"tc -batch exit {p.returncode}: {p.stderr.strip()[-300:]}")
    per_dev = {d: sum(1 for c in cmds if c.startswith(f"tc filter add dev {d} ")) for d in ("p0", "vxlan0")}
    lab.check(f"every `dpoffloadd --dry-run` command is accepted by tc ({len(cmds)} commands: {per_dev})",
              r.returncode == 0 and per_dev["vxlan0"] > 0 and not bad,
              f"exit {r.returncode}; refused: {bad[:3]}")
    for d in ("p0", "vxlan0"):
        lab.sh(["tc", "qdisc", "del", "dev", d, "clsact"], ns="hv", check=False)


def check_datapath(run):
    lab = run.lab
    notes = []
    before = egress_counters(lab)
    vh.forward_check(lab, "evpn vni 5001 in (10.1.0.2 -> 10.100.0.2) -> vlan 100 out by tc (vid 100, host mac, "
                     "p0.100 mac, ttl 63, ipv4/udp csum, payload)",
                     vh.host_frame("green", "10.100.0.2", 41001, b"dpo-fpvx evpn->vlan"), "blue", notes=notes)
    vh.forward_check(lab, "vlan 100 in (10.100.0.2 -> 10.2.0.2) -> aci out by tc (outer vlan 2, p0.2 mac -> vtep "
                     "mac, 10.0.2.1 -> 10.0.2.10, udp 4789, vni 6001, inner macs, ttl 63)",
                     vh.host_frame("blue", "10.2.0.2", 41002, b"dpo-fpvx vlan->aci"), "web", notes=notes)
    vh.forward_check(lab, "aci vni 6001 in (10.2.0.2 -> 10.1.0.2) -> evpn out by tc (untagged, p0 mac -> vtep "
                     "mac, 10.0.1.1 -> 10.0.1.2, udp 4789, vni 5001, inner macs, ttl 63)",
                     vh.host_frame("web", "10.1.0.2", 41003, b"dpo-fpvx aci->evpn"), "green", notes=notes)
    vh.forward_check(lab, "ipv6 evpn in (fd00:5001::2 -> fd00:100::2) -> vlan 100 out by tc (hop limit 63)",
                     vh.host_frame("green", "fd00:100::2", 41004, b"dpo-fpvx v6 evpn->vlan"), "blue", notes=notes)
    vh.forward_check(lab, "ipv6 vlan 100 in (fd00:100::2 -> fd00:6001::2) -> aci out by tc (vni 6001, "
                     "hop limit 63)",
                     vh.host_frame("blue", "fd00:6001::2", 41005, b"dpo-fpvx v6 vlan->aci"), "web", notes=notes)
    for what, n in notes:
        lab.note(f"fast path encapsulation, {what}: {n}")
    # The flow chart's "count", per egress interface: the shared mirred of each one
    # counted exactly the packets sent out through it above.
    after = egress_counters(lab)
    want = {"vlan 100": 2, "evpn vni 5001": 1, "aci vni 6001": 2}
    delta = vh.counter_deltas(before, after, want)
    lab.check("per-egress counters (shared mirred 0xd9000000+vid, 0xda000000+vni) count what left through each "
              f"interface: {delta}", delta == want, f"want {want}; before {before}, after {after}")


def check_nat(run):
    lab, d = run.lab, run.daemon
    # The first packet of the subscriber: punted, chunk pulled, put back, out translated.
    first = vh.DEFAULT.nat_first_check(
        lab, d, f"nat: first UDP packet {SUB}:42000 -> {REMOTE}:53 over EVPN leaves on vlan 200 to the gateway, "
                "source translated into its logged chunk (the packet itself), ttl 63, payload",
        vh.host_frame("green", REMOTE, 42000, b"dpo-fpvx nat first", dport=53), SUB, "transit", POOL,
        timeout=FIRST_TIMEOUT)
    run.chunk = first.chunk
    if first.got is not None:
        run.timings.append(("first packet (punt, chunk, rule, put back)", first.delay))
        run.flow = (42000, first.public, first.port)
    lab.note(f"nat first packet: {first.punt_note}")

    # Later connections: same public address, ports of the same chunk, no new chunk.
    results, bad = [], []
    for proto, sport in (("udp", 42001), ("tcp", 42002)):
        if proto == "udp":
            p = b"dpo-fpvx nat second"
            f = vh.host_frame("green", REMOTE, sport, p, dport=53)
            match = vh.payload_match(p)
        else:
            seq = 3000000 + sport
            f = green_tcp_syn(sport, REMOTE, 80, seq)
            match = (lambda s: lambda pk: TCP in pk and pk[TCP].seq == s and vh.decode(pk)["vni"] is None)(seq)
        out, delay, others = send_get(lab, f, match)
        if out is None:
            bad.append(f"{proto} {sport} not seen ({others})")
            continue
        run.timings.append((f"later {proto} connection (no punt)", delay))
        pub, lo, hi = run.chunk or (None, 0, -1)
        g = vh.decode(out)
        m = vh.mismatches(lab, out, vh.routed(f, "transit", src_ip=pub or "?", sport=None, udp_checksum=None,
                                              payload=None))
        m2 = lab.mismatches([("src port in chunk", lo <= g["sport"] <= hi, True)])
        m = "; ".join(x for x in (m, m2) if x)
        if m:
            bad.append(f"{proto} {sport}: {m} in {vh.describe_wire(out)}")
        results.append(f"{proto} {sport} -> {g['src ip']}:{g['sport']}")
    chunks = [f for f in d.events("chunk-allocated") if f.get("subscriber") == SUB]
    if len(chunks) != 1:
        bad.append(f"{len(chunks)} chunk-allocated lines for {SUB}")
    lab.check(f"nat: a second UDP packet and a TCP SYN of {SUB} use the same public address and its chunk, no new "
              f"chunk ({', '.join(results)})", results and not bad, "; ".join(bad))

    # The reply comes back VXLAN-encapsulated to the subscriber.
    name = (f"nat: reply {REMOTE}:53 -> public addr:port on vlan 200 comes back encapsulated to 10.0.1.2 vni 5001, "
            f"dst {SUB}:42000 (outer/inner macs, ttl 63, checksums)")
    if run.flow is None:
        lab.check(name, False, "the first packet did not come out: no mapping to reply to")
    else:
        sport, pub, pport = run.flow
        p = b"dpo-fpvx nat reply"
        reply = outer_udp(REMOTE, 53, pub, pport, p)
        got = vh.forward_check(lab, name, reply, "green", dst_ip=SUB, dport=sport, udp_checksum=None)
        if got is not None:
            lab.note(f"nat reply encapsulation: {vh.outer_note(got)}")

    # Unsolicited traffic from outside: dropped by tc's outer-new drop and counted.
    pub, lo, _hi = run.chunk or (POOL[0], 1024, 1535)
    port = run.flow[2] if run.flow else lo
    frames = [outer_udp(STRANGER, 4444, pub, port, b"dpo-fpvx unsolicited mapped port"),
              outer_udp(STRANGER, 4444, pub, lo + 100, b"dpo-fpvx unsolicited chunk port"),
              outer_udp(STRANGER, 4444, SUB, 42000, b"dpo-fpvx unsolicited to the subscriber")]
    vh.DEFAULT.dropped_check(lab, f"nat: unsolicited outer udp (to {pub}:{port}, to {pub}:{lo + 100}, to {SUB}) "
                                  "not forwarded",
                             "nat: ...dropped and counted by the outer-new drop action (index {index:#x}: {n0} -> {n1})",
                             frames)


def check_kernel_only(run):
    """VNI 7001 (the kernel's), unknown VNI 9999, inner TTL 1: tc leaves them to the kernel."""
    lab = run.lab
    before = decap_hits(lab)
    f7001 = lambda tag: vh.host_frame("other", "10.100.0.2", 43001, f"dpo-fpvx vni 7001 {tag}".encode())  # noqa
    vh.nothing_check(lab, "evpn vni 7001 (svi-other, not in the mapping) is not forwarded with forwarding off",
                     [f7001("off")])
    payload = b"dpo-fpvx ttl 1"
    ttl1 = vh.host_frame("green", "10.100.0.2", 43003, payload, ttl=1)
    vh.nothing_check(lab, "evpn inner ttl 1 is not forwarded by tc (forwarding off)", [ttl1])
    vh.forwarding(lab, 1)
    try:
        vh.forward_check(lab, "evpn vni 7001 is forwarded by the kernel once forwarding is on (vlan 100, macs, "
                              "ttl 63)", f7001("on"), "blue")
        vh.nothing_check(lab, "unknown vni 9999 over EVPN goes nowhere (forwarding on)",
                         [vh.host_frame("green", "10.100.0.2", 43002, b"dpo-fpvx vni 9999", vni=9999)])
        cap = lab.capture(vh.FAB_NS, vh.FAB_DEV)
        try:
            lab.send(vh.FAB_NS, vh.FAB_DEV, ttl1)
            icmp, others = vh.time_exceeded(cap, ttl1), cap.others_summary()
        finally:
            cap.close()
        vh.time_exceeded_check(lab, "evpn inner ttl 1 reaches the kernel untouched: icmp time exceeded from 10.1.0.1 "
                                    "encapsulated to 10.0.1.2 vni 5001, quoting ttl 1 (forwarding on)",
                               icmp, others, ttl1, "green")
    finally:
        vh.forwarding(lab, 0)
    after = decap_hits(lab)
    lab.check(f"vni 7001 / 9999 left the fast path alone: vxlan0 decap rule counters moved only by the two ttl 1 "
              f"packets of vni 5001 ({before} -> {after})",
              after.get("6001") == before.get("6001") and set(after) == set(before)
              and (after.get("5001") or 0) - (before.get("5001") or 0) == 2,
              f"{before} -> {after}")


def rule_ids(lab):
    """{(dev, chain, pref, handle): one-line summary} of every filter with a handle on DEVICES."""
    out = {}
    for dev in DEVICES:
        for b in vh.tc_blocks(lab, dev, stats=False):
            head = b.splitlines()[0]
            ident = tuple(re.search(rx, head).group(1) if re.search(rx, head) else "?"
                          for rx in (r"chain (\d+)", r"pref (\d+)", r"handle (\S+)"))
            out[(dev,) + ident] = vh.Rule(dev, b).summary()
    return out


def utc(t):
    """HH:MM:SS.mmm of a time.time() value, as `ip -ts monitor` prints it."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


def link_ids(lab):
    return {l["ifname"]: l["ifindex"] for l in json.loads(lab.sh(["ip", "-j", "link", "show"], ns="hv").stdout)}


def stop_daemon(run, why):
    """SIGTERM the daemon; note what (if anything) disappeared from the kernel with it."""
    lab = run.lab
    ids0, links0 = rule_ids(lab), link_ids(lab)
    t_stop = time.time()
    rc = run.daemon.stop()
    run.daemon.kill()
    ids1, links1 = rule_ids(lab), link_ids(lab)
    gone = [ids0[k] for k in ids0 if k not in ids1]
    changed_links = {k: (links0.get(k), links1.get(k)) for k in set(links0) | set(links1)
                     if links0.get(k) != links1.get(k)}
    lab.note(f"SIGTERM ({why}) at {utc(t_stop)}: exit {rc}; filters {len(ids0)} -> {len(ids1)}; links changed: "
             f"{changed_links or 'none'}; {len(gone)} filters gone"
             + (": " + " || ".join(gone[:6]) if gone else ""))
    if gone:
        q = lab.sh(["tc", "qdisc", "show", "dev", "vxlan0"], ns="hv", check=False)
        lab.note(f"  tc qdisc show dev vxlan0: {q.stdout.strip()} {q.stderr.strip()}")
        lab.note("  gone per device: " + ", ".join(
            f"{dev} {sum(1 for k in ids0 if k not in ids1 and k[0] == dev)}" for dev in DEVICES))
        dm = lab.sh(["dmesg"], check=False).stdout.strip().splitlines()[-5:]
        lab.note(f"  dmesg tail: {' | '.join(dm)}")
    return rc, gone


def rules_kept_check(run, name, action, snapshot=None, settle=2.0):
    """Run `action()` (a kernel change the fast path must not react to by dropping rules), let the
    daemon reconcile (its next `reconciled` line, at most `settle` s), and check that every filter
    of `snapshot` (default: taken now) is still installed."""
    lab, d = run.lab, run.daemon
    snapshot = snapshot if snapshot is not None else rule_ids(lab)
    since, mon = len(d.lines()), len(run.monitor.lines())
    if action is not None:
        action()
        d.wait_event("reconciled", lambda f: True, settle, since)
    now = rule_ids(lab)
    gone = [k for k in snapshot if k not in now]
    recs = [l.strip() for l in d.lines()[since:] if parse_log_line(l)[0] == "reconciled"]
    events = [l.strip() for l in run.monitor.lines()[mon:] if "vxlan0" in l]
    per_dev = ", ".join(f"{dev} {sum(1 for k in gone if k[0] == dev)}" for dev in DEVICES)
    return lab.check(f"{name} ({len(snapshot)} filters before, {len(now)} after)", not gone,
                     f"{len(gone)} filters gone ({per_dev}), first: {[snapshot[k] for k in gone[:3]]}; "
                     f"daemon: {recs[-2:] if recs else 'no reconciled line'}; link events on vxlan0: {events[:3]}")


def check_link_events(run, complete):
    """Kernel events a hypervisor sees all the time must not make the daemon drop the VXLAN rules.
    `complete`: whether every rule was in place before (else the check could not fail)."""
    lab = run.lab
    if not complete:
        lab.note("bridge port notification check not tried: rules were already missing before it")
        return
    rules_kept_check(run, "a bridge port notification for vxlan0 (`bridge link set dev vxlan0 learning off`, "
                          "nothing changed: RTM_NEWLINK family AF_BRIDGE) leaves every rule in place",
                     lambda: lab.sh(["bridge", "link", "set", "dev", "vxlan0", "learning", "off"], ns="hv"))


def check_vxlan_recreated(run):
    """The VXLAN device deleted and made again (ifreload, a layout change) while the daemon
    does not look (stopped here, so both changes land in one pass): the rules on p0 and
    dpo-inject that send to it hold shared mirred actions (one per VNI) that still name the
    gone device, and a filter naming an existing shared action only binds to it as it is.
    The daemon must point those actions at the new device, and then be in step."""
    lab, d = run.lab, run.daemon
    vx = [c for c in run.built.commands if re.search(r"\bvxlan0\b", c)]
    since = len(d.lines())
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        lab.sh(["ip", "link", "del", "vxlan0"], ns="hv")
        for c in vx:
            lab.sh(c, ns="hv")
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    new_ifindex = int(lab.sh(["cat", "/sys/class/net/vxlan0/ifindex"], ns="hv").stdout)
    fields, line, at = d.wait_event("reconciled", lambda f: int(f.get("repointed", 0)) > 0, timeout=20.0,
                                    since=since)
    lab.check(f"vxlan0 deleted and re-created (ifindex {new_ifindex}) in one pass of the daemon: the shared "
              f"redirects toward it are pointed at the new device ({line.strip() if fields else line})",
              fields is not None, f"reconciled since: {d.events('reconciled', since)[-4:]}")
    # In step afterwards: a reload of the same file makes a pass that sends nothing.
    mark = len(d.lines())
    os.kill(d.proc.pid, signal.SIGHUP)
    f2, line2, _ = d.wait_event("reconciled", lambda f: True, timeout=20.0, since=mark)
    lab.check("...and then in step: the next pass (SIGHUP, same file) sends 0 filter changes and re-points nothing "
              f"({line2.strip() if f2 else line2})",
              f2 is not None and f2.get("messages") == "0" and f2.get("repointed") == "0")
    vh.forward_check(lab, "after vxlan0 was re-created, vlan 100 in -> aci out still by tc (vni 6001)",
                     vh.host_frame("blue", "10.2.0.2", 41102, b"dpo-fpvx recreated vlan->aci"), "web")
    vh.forward_check(lab, "after vxlan0 was re-created, evpn in -> vlan 100 still by tc",
                     vh.host_frame("green", "10.100.0.2", 41103, b"dpo-fpvx recreated evpn->vlan"), "blue")


def check_restart(run):
    lab = run.lab
    # The NAT flow's conntrack entry can live as little as 30 s after its last packet
    # (nf_conntrack_udp_timeout, for a UDP flow not yet a "stream"): on a loaded machine
    # the checks since check_nat take longer (seen: 45 s, and the reply was dropped as new). A packet of the flow now keeps
    # it alive across the restart, which is what the reply check after it is about.
    if run.flow:
        out, _delay, others = send_get(run.lab, vh.host_frame("green", REMOTE, run.flow[0], b"dpo-fpvx nat keepalive",
                                                              dport=53), vh.payload_match(b"dpo-fpvx nat keepalive"))
        run.lab.note(f"nat flow refreshed before the restart: {'out' if out is not None else 'not seen: ' + others}")
    before = {dev: filters_text(lab, dev) for dev in DEVICES}
    rc, gone = stop_daemon(run, "before the restart")
    lab.check(f"SIGTERM: daemon exits 0 and leaves its rules in place (exit {rc}, {len(gone)} filters gone)",
              rc == 0 and not gone, f"{len(gone)} filters disappeared: {gone[:4]}; {run.daemon.tail()}")
    lab.note(f"restarting the daemon at {utc(time.time())}")
    run.daemon, rec = start_daemon(lab, run.config, "restart", timeout=START_TIMEOUT)
    run.daemons.append(run.daemon)
    if rec is None:
        return False
    lab.check(f"restart with nothing changed sends zero filter changes ({rec['_line']})",
              rec.get("messages") == "0" and rec.get("kept") == rec.get("rules")
              and all(rec.get(k) == "0" for k in ("added", "replaced", "deleted", "refused")),
              "want messages=0, kept=rules, added=replaced=deleted=refused=0")
    after = {dev: filters_text(lab, dev) for dev in DEVICES}
    run.after_restart = rule_ids(lab)
    changed = [dev for dev in DEVICES if before[dev] != after[dev]]
    lab.check("filters on p0, vxlan0 and dpo-inject identical after the restart", not changed,
              f"changed on {changed}")
    vh.forward_check(lab, "after the restart evpn -> vlan 100 still forwarded by tc",
                     vh.host_frame("green", "10.100.0.2", 41101, b"dpo-fpvx after restart"), "blue")
    if run.flow:
        sport, pub, pport = run.flow
        vh.forward_check(lab, "after the restart the nat flow's reply still comes back encapsulated to "
                              f"{SUB}:{sport}",
                         outer_udp(REMOTE, 53, pub, pport, b"dpo-fpvx reply after restart"), "green",
                         dst_ip=SUB, dport=sport, udp_checksum=None)
    return True


def ct_rules(lab):
    """How many of the filters on p0 and vxlan0 use conntrack (the NAT stage's)."""
    return sum(1 for dev in ("p0", "vxlan0") for r in vh.rules(lab, dev) if any(a.startswith("ct ") for a in r.actions))


def check_nat_reload(run):
    """SIGHUP with `nat` taken out of the file stops the NAT stage: no conntrack rules, no
    punt pair, routing by tc goes on; putting it back starts the stage again."""
    lab, d = run.lab, run.daemon
    with_nat = open(run.config).read()
    without = json.loads(with_nat)
    del without["nat"]
    since = len(d.lines())
    with open(run.config, "w") as f:
        json.dump(without, f)
    os.kill(d.proc.pid, signal.SIGHUP)
    fields, line, at = d.wait_event("nat-stopped", lambda f: True, timeout=20.0, since=since)
    links = lab.sh(["ip", "-br", "link", "show"], ns="hv").stdout
    n_ct = ct_rules(lab)
    lab.check(f"SIGHUP without `nat`: the NAT stage stops, its punt pair is deleted and no rule uses conntrack "
              f"({line.strip() if fields else line}; ct rules {n_ct})",
              fields is not None and "dpo-inject" not in links and n_ct == 0,
              f"links: {links.split()[::3][:12]}; log: {d.tail()}")
    vh.forward_check(lab, "without `nat`, evpn in -> vlan 100 still by tc",
                     vh.host_frame("green", "10.100.0.2", 41104, b"dpo-fpvx no nat evpn->vlan"), "blue")
    since = len(d.lines())
    with open(run.config, "w") as f:
        f.write(with_nat)
    os.kill(d.proc.pid, signal.SIGHUP)
    fields, line, at = d.wait_event("nat-running", lambda f: True, timeout=20.0, since=since)
    rec, rline, _ = d.wait_event("reconciled", lambda f: True, timeout=20.0, since=at or since)
    links = lab.sh(["ip", "-br", "link", "show"], ns="hv").stdout
    n_ct = ct_rules(lab)
    reentry = [r for r in vh.rules(lab, "vxlan0") if r.chain == 0 and r.pref == 2]
    lab.check(f"SIGHUP with `nat` back: the stage runs again, punt pair, conntrack rules ({n_ct}) and the "
              f"VXLAN re-entry rule in place ({rline.strip() if rec else rline})",
              fields is not None and rec is not None and "dpo-inject" in links and n_ct > 0 and len(reentry) == 1,
              f"links: {links.split()[::3][:12]}; log: {d.tail()}")


def check_flush(run):
    lab = run.lab
    rc, _gone = stop_daemon(run, "before --flush")
    n = {dev: len(vh.rules(lab, dev)) for dev in DEVICES}
    r, last, ev, _fields = vh.daemon_flush(lab, run.config)
    left = {dev: len(vh.rules(lab, dev)) for dev in ("p0", "vxlan0")}
    links = lab.sh(["ip", "-br", "link", "show"], ns="hv").stdout
    lab.check(f"--flush (daemon stopped, exit {rc}) removes the rules from p0 and vxlan0 and the punt pair "
              f"(before: {n}; after: {left}; {last})",
              r.returncode == 0 and ev == "flushed" and not any(left.values()) and "dpo-inject" not in links,
              f"exit {r.returncode}; stderr: {r.stderr.strip()[-300:]}; links: {links.split()[::3][:12]}")
    vh.nothing_check(lab, "after --flush evpn -> vlan 100 is no longer forwarded (forwarding off)",
                     [vh.host_frame("green", "10.100.0.2", 41201, b"dpo-fpvx after flush")])


class LinkMonitor:
    """`ip -ts monitor link` in hv for the whole run: which link events the daemon heard."""

    def __init__(self, lab):
        fd, self.path = tempfile.mkstemp(prefix="fastpath_vxlan-links-", suffix=".log")
        self.f = os.fdopen(fd, "w")
        self.proc = subprocess.Popen(["ip", "-n", "hv", "-ts", "monitor", "link"], stdout=self.f,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def lines(self):
        with open(self.path) as f:
            return f.read().splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.f.close()
        os.unlink(self.path)


def note_daemon_logs(run):
    """The daemon lines worth keeping: chunks, refusals, and every pass after the first that changed rules."""
    lab = run.lab
    for d in run.daemons:
        first = True
        for l in d.lines():
            ev, f = parse_log_line(l)
            if ev == "reconciled":
                if not first and any(f.get(k, "0") != "0" for k in ("added", "replaced", "deleted", "refused")):
                    lab.note(f"daemon {d.tag}: {l.strip()}")
                first = False
            elif ev not in ("started", "nat-running", "nat-resynced", "stopping"):
                lab.note(f"daemon {d.tag}: {l.strip()}"[:400])
    vx = [l for l in run.monitor.lines() if "vxlan0" in l]
    lab.note(f"link events naming vxlan0 during the run (ip -ts monitor link): {len(vx)}")
    for l in vx[:8]:
        lab.note(f"  {l.strip()[:300]}")


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    built = vh.build(lab)
    vh.forwarding(lab, 0)
    fd, config = tempfile.mkstemp(prefix="fastpath_vxlan-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING)
    check_dry_run(lab, config)
    r = Run(lab, config)
    r.built = built
    r.monitor = LinkMonitor(lab)
    try:
        r.daemon, rec = start_daemon(lab, config, "first", timeout=START_TIMEOUT)
        r.daemons.append(r.daemon)
        if rec is None:
            return
        check_start(r, rec)
        check_datapath(r)
        check_nat(r)
        snap = rule_ids(lab)
        check_kernel_only(r)
        rules_kept_check(r, "the vni 7001 / 9999 / ttl 1 checks and forwarding on/off left every rule in place",
                         None, snap)
        note_vxlan_counters(lab, "before the restart")
        lab.note(f"punt mirred: {vh.action_pkts(lab, 'mirred', vh.PUNT_INDEX)} pkt; outer-new drops: "
                 f"{vh.action_pkts(lab, 'gact', vh.DROP_OUTER_NEW)} pkt")
        if check_restart(r):
            complete = rules_kept_check(r, "every filter installed after the restart is still installed after "
                                           "its checks (nothing dropped them meanwhile)", None, r.after_restart)
            check_link_events(r, complete)
            check_vxlan_recreated(r)
            check_nat_reload(r)
            check_flush(r)
        for what, s in r.timings:
            lab.note(f"timing: {what}: {s * 1000:.1f} ms")
        note_daemon_logs(r)
    finally:
        try:
            if lab.failed:
                vh.DEFAULT.trace(lab, DEVICES, r.daemons)
        finally:
            for d in r.daemons:
                d.kill()
            os.unlink(config)
            r.monitor.stop()

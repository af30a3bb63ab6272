# SPDX-License-Identifier: GPL-2.0-or-later
"""The dpoffload demo, run inside the lab guest by `lab.py demo`.

Builds a hypervisor whose netdevs match examples/vlan.json in a network namespace,
validates every example mapping with `dpoffloadd --check`, shows the rules
`dpoffloadd --dry-run` would install, then runs the daemon in that namespace and
shows the fast path at work: with the kernel's forwarding off, a packet from a VM on
VLAN 100 comes back routed on VLAN 101 by tc; a TTL 1 packet is left to the kernel;
a route added costs a few rule changes and no dump, a rule deleted by hand is put
back; the rules survive a stop, a restart sends no change, and --flush removes them.

It is a demo, not a test (test/lab/scenarios/fastpath_vlan.py is the test), but it
stops with a clear message and exit status 1 when something does not behave.
"""

import argparse
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # test/lab: labkit
import labkit  # noqa: E402

WIDTH = 72
STEPS = 9

# The hypervisor of examples/vlan.json: (netdev, mapping name, role, vlan, IPv4, IPv6)
VLANS = [
    ("p0.100", "blue", "inner", 100, "10.100.0.1/24", "fd00:100::1/64"),
    ("p0.101", "red", "inner", 101, "10.101.0.1/24", "fd00:101::1/64"),
    ("p0.200", "transit", "outer", 200, "10.200.0.1/24", "fd00:200::1/64"),
]
# Hosts the kernel would learn by ARP / neighbour discovery; static here.
BLUE_VM = ("10.100.0.10", "02:00:00:00:01:0a")
RED_VM = ("10.101.0.10", "02:00:00:00:02:0a")
NEIGHBOURS = [
    (BLUE_VM[0], BLUE_VM[1], "p0.100", "a VM on blue"),
    (RED_VM[0], RED_VM[1], "p0.101", "a VM on red"),
    ("10.200.0.254", "02:00:00:00:c8:fe", "p0.200", "the default gateway on transit"),
    ("fd00:200::fe", "02:00:00:00:c8:fe", "p0.200", "the same gateway, IPv6"),
]
MAPPING = "examples/vlan.json"
CHAIN_INNER = 256              # lib/core/compile/pipeline.hpp: routing chain of inner interfaces
MIRRED_BASE = 0xd9000000       # index of the shared mirred action of egress VLAN vid: base + vid
START_TIMEOUT = 20.0           # daemon start -> `reconciled` (TCG is slow; usually < 1 s)
STOP_TIMEOUT = 10.0
NOTHING_WINDOW = 0.5           # "nothing else comes back" window, after the expected answer

failures = []
current_step = [""]   # the heading of the step running, for a failure message
daemons = []          # every dpoffloadd started, killed on the way out if still running


class DemoError(Exception):
    """Something did not behave: the demo stops here and exits 1."""


# ---------------------------------------------------------------- printing

def heading(n, title, what):
    current_step[0] = f"step {n}/{STEPS} ({title})"
    print()
    print("=" * WIDTH)
    print(f" Step {n}/{STEPS}  {title}")
    print("=" * WIDTH)
    for para in what:
        print(textwrap.fill(para, WIDTH, initial_indent="  ", subsequent_indent="  "))
    print(flush=True)


def echo(shown, ns=None, note=""):
    print(f"  {'[' + ns + '] ' if ns else ''}$ {shown}" + (f"    # {note}" if note else ""), flush=True)


def out(lines):
    for line in lines:
        print(f"      {line}".rstrip())
    sys.stdout.flush()


def say(text):
    """A remark between commands (not command output)."""
    print(textwrap.fill(text, WIDTH, initial_indent="  > ", subsequent_indent="    "), flush=True)


def run(argv, ns=None, show=True, must=True, note="", output=True):
    """Run a command (in netns `ns`), printing it like a shell session. `argv` may be a
    string: a shell command line (for pipes)."""
    shell = isinstance(argv, str)
    cmd = ["sh", "-c", argv] if shell else list(argv)
    full = (["ip", "netns", "exec", ns] if ns else []) + cmd
    shown = argv if shell else shlex.join(argv)
    if show:
        echo(shown, ns, note)
    r = subprocess.run(full, capture_output=True, text=True)
    text = (r.stdout + r.stderr).rstrip()
    if show and output and text:
        out(text.splitlines())
    if r.returncode != 0:
        if show:
            print(f"      (exit status {r.returncode})")
        if must:
            failures.append(f"{shown}: exit {r.returncode}: {r.stderr.strip()}")
    sys.stdout.flush()
    return r


def must_run(argv, ns=None, **kw):
    """run(), but a failure stops the demo."""
    r = run(argv, ns=ns, must=False, **kw)
    if r.returncode != 0:
        shown = argv if isinstance(argv, str) else shlex.join(argv)
        raise DemoError(f"`{shown}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
    return r


def quiet(argv, ns=None):
    """Run a command without echoing it (for the demo's own bookkeeping)."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(full, capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoError(f"`{shlex.join(argv)}` failed (exit {r.returncode}): {r.stderr.strip()}")
    return r.stdout


# ---------------------------------------------------------------- the daemon

def parse_log_line(line):
    """`<6>reconciled rules=38 kept=36 ...` -> ("reconciled", {"rules": "38", ...})."""
    m = re.match(r"<\d>(\S+)\s*(.*)$", line.strip())
    if not m:
        return None, {}
    return m.group(1), {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(2))}


class Daemon:
    """`dpoffloadd --config FILE` in netns `ns`, in the background, stderr to a log file."""

    def __init__(self, ns, config, log_path):
        self.ns, self.config, self.log_path = ns, config, log_path
        self.shown = f"dpoffloadd --config {config} 2>{log_path} &"
        echo(self.shown, ns)
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "dpoffloadd", "--config", config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        daemons.append(self)
        self.t0 = time.monotonic()

    def lines(self):
        with open(self.log_path) as f:
            text = f.read()
        return text[:text.rfind("\n") + 1].splitlines()

    def wait_for(self, event, timeout=START_TIMEOUT, after=0):
        """Poll the log until its first `event` line past its first `after` lines: (fields,
        line, seconds). Raises if the daemon exits or the deadline passes first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines()[after:]:
                ev, fields = parse_log_line(line)
                if ev == event:
                    return fields, line, time.monotonic() - self.t0
            if self.proc.poll() is not None:
                raise DemoError(f"dpoffloadd exited with status {self.proc.returncode} before its "
                                f"'{event}' line; its log: {' | '.join(self.lines()) or '(empty)'}")
            if time.monotonic() >= deadline:
                raise DemoError(f"no '{event}' line from dpoffloadd within {timeout:.0f} s; its log: "
                                f"{' | '.join(self.lines()) or '(empty)'}")
            time.sleep(0.02)

    def stop(self):
        """SIGTERM, as systemd would; the exit status (raises if it does not exit)."""
        echo(f"kill -TERM {self.proc.pid}", note="SIGTERM, as `systemctl stop` sends")
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
            echo(f"tail -n 1 {self.log_path}", note=f"it exited with status {rc}")
            out(self.lines()[-1:])
            return rc
        except subprocess.TimeoutExpired:
            raise DemoError(f"dpoffloadd did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- tc

def tc_blocks(text, starts="filter "):
    """tc output split into blocks, one per filter (or per action: starts="action order")."""
    blocks = []
    for line in text.splitlines():
        if line.strip().startswith(starts):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return blocks


def packets(block):
    m = re.search(r"Sent \d+ bytes (\d+) pkt", "\n".join(block))
    return int(m.group(1)) if m else 0


def filter_hits():
    """{filter head line: packets} of our routing chain for inner interfaces, and its blocks."""
    text = quiet(["tc", "-s", "filter", "show", "dev", "p0", "ingress", "chain", str(CHAIN_INNER)], "hv")
    blocks = [b for b in tc_blocks(text) if " handle " in b[0]]
    return {b[0].strip(): packets(b) for b in blocks}, blocks


def show_filter_hits(before, note):
    """Echo the tc -s command and print the rules whose counters moved since `before`."""
    echo(f"tc -s filter show dev p0 ingress chain {CHAIN_INNER}", "hv", note)
    hits, blocks = filter_hits()
    moved = [b for b in blocks if hits[b[0].strip()] > before.get(b[0].strip(), 0)]
    out([f"({len(blocks)} rules in chain {CHAIN_INNER}; "
         + {0: "no counter moved)", 1: "the one whose counter moved:)"}.get(
             len(moved), f"the {len(moved)} whose counters moved:)")])
    for b in moved:
        keep = [line for line in b if line.strip() and not re.match(
            r"\s*(random type|backlog|cookie|Action statistics|index \d+ ref)", line)]
        notes = {"key #0 ": "new dst and src MACs (bytes 0-11)", "at ipv4+8: add ff": "TTL + 255, i.e. TTL - 1"}
        keep = [line.rstrip() + next((f"    <- {v}" for k, v in notes.items() if k in line), "")
                for line in keep]
        # The first action's counter is the rule's hit counter; drop the repeats of the others.
        seen_sent, shown = False, []
        for line in keep:
            if "Sent " in line:
                if seen_sent:
                    continue
                seen_sent = True
                line = line.rstrip() + "    <- hit counter"
            shown.append(line.replace("\t", "  "))
        out(shown)
    return hits, moved


def count_rules():
    return sum(1 for line in quiet(["tc", "filter", "show", "dev", "p0", "ingress"], "hv").splitlines()
               if line.startswith("filter ") and " handle " in line)


# ---------------------------------------------------------------- frames

def frame_row(label, pkt):
    from scapy.layers.inet import IP
    vl = ",".join(str(v) for v in labkit.vlans(pkt)) or "-"
    return f"{label:<12} {vl:>4}  {pkt.src}  {pkt.dst}  {pkt[IP].ttl:>3}"


def frame_table(rows):
    out([f"{'':<12} vlan  {'src mac':<17}  {'dst mac':<17}  ttl"] + rows)


def udp_from_blue(router_mac, dst_ip, sport, payload, ttl=64):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    return (Ether(src=BLUE_VM[1], dst=router_mac) / Dot1Q(vlan=100)
            / IP(src=BLUE_VM[0], dst=dst_ip, ttl=ttl) / UDP(sport=sport, dport=5001) / payload)


# ---------------------------------------------------------------- steps

def build_hypervisor():
    heading(1, "Build a hypervisor's network",
            ["We are inside a qemu guest running Debian 12's stock kernel "
             f"({os.uname().release}), with this machine's files shared in read-only. "
             "Network namespace 'hv' plays the hypervisor: its uplink p0 is one end of a "
             "veth pair whose other end, fab0, sits in namespace 'fabric' and stands in "
             "for the top-of-rack switch (on a real host p0 is the ConnectX port).",
             "On p0 we create the VLAN sub-interfaces that examples/vlan.json maps: "
             + ", ".join(f"{d} ({n}, {r}, VLAN {v})" for d, n, r, v, _, _ in VLANS) + ". "
             "The kernel routes between them: it is the slow path dpoffloadd accelerates."])
    for ns in ("hv", "fabric"):
        if os.path.exists(f"/run/netns/{ns}"):
            run(["ip", "netns", "del", ns], show=False, must=False)
        run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", "p0", "type", "veth", "peer", "name", "fab0", "netns", "fabric"], ns="hv",
        note="the uplink")
    run(["ip", "link", "set", "p0", "up"], ns="hv")
    run(["ip", "link", "set", "fab0", "up"], ns="fabric")
    for dev, name, role, vid, v4, v6 in VLANS:
        run(["ip", "link", "add", "link", "p0", "name", dev, "type", "vlan", "id", str(vid)], ns="hv",
            note=f"interface '{name}', role {role}")
        run(["ip", "addr", "add", v4, "dev", dev], ns="hv")
        run(["ip", "addr", "add", v6, "dev", dev, "nodad"], ns="hv")
        run(["ip", "link", "set", dev, "up"], ns="hv")
    for addr, mac, dev, what in NEIGHBOURS:
        run(["ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent"], ns="hv",
            note=what)
    run(["ip", "route", "add", "default", "via", "10.200.0.254", "dev", "p0.200"], ns="hv",
        note="default route out of the transit side")
    run(["ip", "-6", "route", "add", "default", "via", "fd00:200::fe", "dev", "p0.200"], ns="hv")
    run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], ns="hv",
        note="a router")


def show_kernel():
    heading(2, "What the kernel now holds (namespace 'hv')",
            ["These are the tables dpoffloadd reads: links (the VLAN sub-interfaces and their "
             "ids), addresses, routes (longest-prefix match picks the egress interface) and "
             "neighbours (the next hop's MAC address)."])
    run(["ip", "-d", "link", "show", "dev", "p0"], ns="hv")
    for dev, *_ in VLANS:
        run(["ip", "-d", "link", "show", "dev", dev], ns="hv")
    run(["ip", "-br", "addr"], ns="hv")
    run(["ip", "route"], ns="hv")
    run(["ip", "-6", "route"], ns="hv")
    run(["ip", "neigh", "show", "nud", "permanent"], ns="hv")


def check_examples(daemon, examples):
    heading(3, "Validate the interface-mapping files",
            ["`dpoffloadd --check` validates a mapping file against the schema and the "
             "product's rules (unique names, VLAN ids, VNIs, ...) and changes nothing in "
             "the kernel. Each shipped example must be valid."])
    if not daemon:
        print("  (skipped: dpoffloadd is not built)")
        return
    for ex in examples:
        run(["dpoffloadd", "--check", "--config", ex])


def wrap_tc(cmd):
    """A long `tc filter add` split at its actions, shell-style."""
    parts = re.split(r" (?=action )", cmd)
    return [parts[0] + (" \\" if len(parts) > 1 else "")] + \
        [f"    {p}" + (" \\" if i < len(parts) - 2 else "") for i, p in enumerate(parts[1:])]


def dry_run():
    heading(4, "The rules dpoffloadd would install",
            ["`--dry-run` compiles the mapping and the kernel's tables into tc flower rules "
             "on p0's ingress and prints them as tc commands, changing nothing. Chain 0 takes "
             "every VLAN-tagged frame; chain 1 finds the logical interface from the VLAN id "
             "(for frames sent to the router's MAC); chain 256 (inner) or 512 (outer) routes: "
             "TTL <= 1 and traffic for the host itself go to the kernel first, then one prio "
             "per prefix length, so the longest prefix wins.",
             f"Shown: the head of the list, the rule the packet of step 6 will hit (to "
             f"{RED_VM[0]}, a VM on red), and the notes on what is left to the kernel: "
             "examples/vlan.json has a `nat` section and NAT is not in the fast path yet, so "
             "inner -> outer IPv4 stays with the kernel. Inner -> inner is routed by tc."])
    echo(f"dpoffloadd --dry-run --config {MAPPING}", "hv")
    r = subprocess.run(["ip", "netns", "exec", "hv", "dpoffloadd", "--dry-run", "--config", MAPPING],
                       capture_output=True, text=True)
    lines = (r.stdout + r.stderr).rstrip().splitlines()
    if r.returncode != 0:
        out(lines[-10:])
        raise DemoError(f"dpoffloadd --dry-run exited {r.returncode}")
    rules = [i for i, line in enumerate(lines) if line.startswith("tc filter add")]
    head_end = rules[min(4, len(rules) - 1)] + 1     # chain 0, chain 1 (3 VLANs), the TTL rule
    target = next((i for i in rules if f" chain {CHAIN_INNER} " in lines[i]
                   and f"dst_ip {RED_VM[0]}/32" in lines[i]), None)
    if target is None:
        raise DemoError(f"--dry-run has no chain {CHAIN_INNER} rule for {RED_VM[0]}")
    notes = [line for line in lines if line.startswith("# note:")]
    shown = lines[:head_end]
    shown.append(f"# ... {sum(1 for i in rules if head_end <= i < target - 1)} more rules ...")
    shown += [lines[target - 1]] + wrap_tc(lines[target])
    shown.append(f"# ... {sum(1 for i in rules if i > target)} more rules ...")
    shown += notes
    out(shown)
    m = re.search(r"(\d+) rules", lines[0])
    say(f"{m.group(1) if m else len(rules)} rules in all. The forwarding rule does what the kernel's "
        "forwarding would: rewrite the MACs (dst: the neighbour's, src: the router's), TTL - 1 "
        "(`ttl add 255`), fix the IPv4 checksum, swap VLAN 100's tag for VLAN 101's, and send the "
        f"frame back out of the uplink through the shared mirred action of VLAN 101 (index "
        f"{MIRRED_BASE + 101} = 0x{MIRRED_BASE + 101:x}).")
    return int(m.group(1)) if m else len(rules)


def start_daemon(logdir, n_rules):
    heading(5, "Start the daemon",
            ["Without a mode, dpoffloadd stays in the foreground: it follows links, addresses, "
             "routes and neighbours over netlink and keeps the rules on p0 in step with them. "
             "Here it runs in the background in 'hv' and logs to a file; we wait for its "
             "`reconciled` line, which says what it sent to the kernel.",
             "p0 is a veth in this lab, so every rule runs in the kernel's software tc "
             "(`not_in_hw`); on a ConnectX port in switchdev mode mlx5 offloads them (`in_hw`)."])
    d = Daemon("hv", MAPPING, os.path.join(logdir, "dpoffloadd.log"))
    fields, line, secs = d.wait_for("reconciled")
    echo(f"cat {d.log_path}", note=f"its `reconciled` line came after {secs:.1f} s")
    out(d.lines())
    if fields.get("refused") != "0" or int(fields.get("rules", 0)) < n_rules:
        raise DemoError(f"want rules>={n_rules} refused=0: {line.strip()}")
    if int(fields["rules"]) > n_rules:
        say(f"{fields['rules']} rules, {int(fields['rules']) - n_rules} more than the dry run: the mapping has "
            "`nat`, and the running daemon's NAT stage adds the conntrack rules (the dry run leaves "
            "inner -> outer IPv4 to the kernel) and the way back on its punt pair (dpo-inject).")
    echo(f"dpoffloadd --show --config {MAPPING}", "hv", "now it lists the installed rules")
    r = subprocess.run(["ip", "netns", "exec", "hv", "dpoffloadd", "--show", "--config", MAPPING],
                       capture_output=True, text=True)
    lines = (r.stdout + r.stderr).rstrip().splitlines()
    at = next((i for i, l in enumerate(lines) if l.startswith("Rules on p0")), None)
    if r.returncode != 0 or at is None:
        out(lines[-10:])
        raise DemoError(f"dpoffloadd --show exited {r.returncode} or printed no 'Rules on p0' line")
    keep = 8
    out(lines[:at + 1 + keep])
    if len(lines) > at + 1 + keep:
        out([f"  ... {len(lines) - at - 1 - keep} more rules"])
    if "in step" not in lines[at]:
        raise DemoError(f"--show says the rules are not in step: {lines[at]}")
    return d, int(fields["rules"])


def blue_to_red(lab, router_mac, sport, payload):
    """Send one UDP packet from blue's VM to red's VM; it must come back routed on VLAN 101."""
    frame = udp_from_blue(router_mac, RED_VM[0], sport, payload)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 100, {BLUE_VM[0]}:{sport} -> "
         f"{RED_VM[0]}:5001, ttl 64", "fabric")
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0", labkit.payload_is(payload))
    if got is None:
        raise DemoError(f"the packet did not come back routed within {labkit.EXPECT_TIMEOUT:.0f} s; "
                        f"{cap.others_summary()}")
    frame_table([frame_row("sent", frame), frame_row("came back", got)])
    from scapy.layers.inet import IP
    bad = labkit.Lab.mismatches([
        ("vlans", labkit.vlans(got), [101]), ("dst mac", got.dst, RED_VM[1]), ("src mac", got.src, router_mac),
        ("ttl", got[IP].ttl, 63), ("src ip", got[IP].src, BLUE_VM[0]), ("dst ip", got[IP].dst, RED_VM[0]),
        ("ipv4 checksum valid", labkit.ipv4_checksum_ok(got), True)])
    if bad:
        raise DemoError(f"the packet came back, but not routed as the kernel would: {bad}")
    return got


def fast_path(lab, router_mac):
    heading(6, "The fast path at work: blue -> red, kernel forwarding off",
            ["We turn IPv4 forwarding off in 'hv': from now on the kernel drops any packet "
             "that is not for the host itself. Then, from the fabric side, the VM on blue "
             f"(VLAN 100, {BLUE_VM[0]}) sends one UDP packet to the VM on red ({RED_VM[0]}), "
             "addressed to its router's MAC (p0.100's). We capture on fab0: if it comes back "
             "on VLAN 101, tc routed it."])
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=0"], ns="hv")
    hits0, _ = filter_hits()
    blue_to_red(lab, router_mac, 40000, b"hello red, from blue")
    say(f"Back on VLAN 101, addressed to red's VM ({RED_VM[1]}, from the neighbour "
        f"table), from the router ({router_mac}: the VLAN devices share p0's MAC), TTL 63, IPv4 "
        "checksum valid, same addresses and payload. The kernel could not have done it: its "
        "forwarding is off. tc did, and the counters say which rule and which egress:")
    print()
    _, moved = show_filter_hits(hits0, "the rules that counted it")
    if not any(f"dst_ip {RED_VM[0]}" in "\n".join(b) for b in moved):
        raise DemoError(f"the chain {CHAIN_INNER} rule for {RED_VM[0]} did not count the packet")
    echo("tc -s actions show action mirred", "hv", "one shared counter per egress VLAN")
    actions = tc_blocks(quiet(["tc", "-s", "actions", "show", "action", "mirred"], "hv"), "action order")
    shown, red = [], None
    for b in actions:
        m = re.search(r"index (\d+)", "\n".join(b))
        idx = int(m.group(1)) if m else 0
        sent = next((l.strip() for l in b if "Sent " in l), "?")
        idx_line = next((l.strip() for l in b if l.strip().startswith("index ")), "")
        shown += [b[0].strip(), f"  {idx_line}    <- 0x{idx:x}: egress VLAN {idx - MIRRED_BASE}",
                  f"  {sent}"]
        if idx == MIRRED_BASE + 101:
            red = packets(b)
    out(shown)
    if red != 1:
        raise DemoError(f"the mirred counter of VLAN 101 (index {MIRRED_BASE + 101}) is {red}, want 1")


def ttl_one(lab, router_mac):
    heading(7, "TTL 1: left to the kernel",
            ["A packet whose TTL would run out here is not the fast path's: the first rule of "
             "chain 256 (`ip_ttl 0x00/0xfe`, action ok) hands it to the kernel untouched. We "
             "turn forwarding back on, as on a real hypervisor, and send the same packet with "
             "TTL 1: the kernel does what a router does, drops it and answers ICMP time "
             "exceeded. Nothing reaches red."])
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=1"], ns="hv")
    hits0, _ = filter_hits()
    from scapy.layers.inet import ICMP, IP, UDPerror
    payload = b"hello red, ttl 1"
    frame = udp_from_blue(router_mac, RED_VM[0], 40001, payload, ttl=1)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 100, {BLUE_VM[0]}:40001 -> "
         f"{RED_VM[0]}:5001, ttl 1", "fabric")
    cap = lab.capture("fabric", "fab0")
    try:
        lab.send("fabric", "fab0", frame)
        icmp = cap.expect(lambda p: ICMP in p and p[ICMP].type == 11 and UDPerror in p
                          and p[UDPerror].sport == 40001)
        leaked = next((p for p in cap.others if labkit.payload_is(payload)(p)), None)
        if leaked is None:
            leaked = cap.expect_none(labkit.payload_is(payload), window=NOTHING_WINDOW)
        others = cap.others_summary()
    finally:
        cap.close()
    if leaked is not None:
        raise DemoError(f"the TTL 1 packet was forwarded: {labkit.describe(leaked)}")
    if icmp is None:
        raise DemoError(f"no ICMP time exceeded came back from the kernel; {others}")
    bad = labkit.Lab.mismatches([
        ("vlans", labkit.vlans(icmp), [100]), ("dst mac", icmp.dst, BLUE_VM[1]),
        ("src ip", icmp[IP].src, "10.100.0.1"), ("dst ip", icmp[IP].dst, BLUE_VM[0])])
    if bad:
        raise DemoError(f"the kernel's ICMP time exceeded is not as expected: {bad}")
    frame_table([frame_row("sent", frame), frame_row("answer", icmp)])
    say(f"The answer: ICMP time exceeded from {icmp[IP].src} (the router's address on blue) to "
        f"{icmp[IP].dst}, on VLAN {','.join(map(str, labkit.vlans(icmp)))}; no copy of the packet "
        f"on VLAN 101 ({NOTHING_WINDOW:.1f} s watched after the answer). The TTL rule counted it:")
    print()
    _, moved = show_filter_hits(hits0, "the rules that counted it")
    if not any("ip_ttl" in "\n".join(b) for b in moved):
        raise DemoError(f"the chain {CHAIN_INNER} TTL rule did not count the packet")


def follows_the_kernel(lab, router_mac, daemon):
    heading(8, "Every event costs what it changes",
            ["The daemon keeps its rules in step with the kernel as it changes, one event at a "
             "time: a route added recompiles that route's rules alone and sends only those, "
             "with no dump of what is installed (it keeps that in memory, learned from the "
             "kernel's answer to each change). It also listens to tc: a rule of its own that "
             "someone else deletes is put back at once, again without a dump.",
             f"We add a route, 10.250.0.0/24 via red's VM ({RED_VM[0]}), and watch the daemon's "
             "next `reconciled` line: `keys` is what it recompiled, `messages` what it sent, "
             "`dumps` the full dumps it took."])
    mark = len(daemon.lines())
    at_first = count_rules()
    must_run(["ip", "route", "add", "10.250.0.0/24", "via", RED_VM[0], "dev", "p0.101"], ns="hv")
    fields, line, _ = daemon.wait_for("reconciled", after=mark)
    echo(f"tail -n 1 {daemon.log_path}", note="its next `reconciled` line")
    out([line.strip()])
    if fields.get("dumps") != "0" or int(fields.get("keys", 99)) > 3 or int(fields.get("messages", 99)) > 8:
        raise DemoError(f"want dumps=0, keys <= 3 and a few messages for one route: {line.strip()}")
    say(f"keys={fields['keys']} messages={fields['messages']} dumps=0: the route's rule in each routing "
        "chain (and, the first time a next hop is used, its next-hop chain), nothing else; the "
        "same at 100k routes (README.md, `What an event costs`). With the kernel's forwarding "
        "off, the new route is the fast path's:")
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=0"], ns="hv")
    payload = b"hello 10.250.0.5"
    frame = udp_from_blue(router_mac, "10.250.0.5", 40003, payload)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 100, {BLUE_VM[0]}:40003 -> 10.250.0.5:5001, ttl 64",
         "fabric")
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0", labkit.payload_is(payload))
    if got is None:
        raise DemoError(f"the packet to 10.250.0.5 did not come back routed; {cap.others_summary()}")
    frame_table([frame_row("sent", frame), frame_row("came back", got)])
    bad = labkit.Lab.mismatches([("vlans", labkit.vlans(got), [101]), ("dst mac", got.dst, RED_VM[1])])
    if bad:
        raise DemoError(f"the packet to 10.250.0.5 came back, but not toward red's VM: {bad}")

    text = quiet(["tc", "filter", "show", "dev", "p0", "ingress", "chain", str(CHAIN_INNER)], "hv")
    rule = next((b for b in tc_blocks(text) if " handle " in b[0]
                 and any(re.match(r"\s*dst_ip 10\.250\.0\.0/24\b", line) for line in b)), None)
    if rule is None:
        raise DemoError(f"no rule for 10.250.0.0/24 in chain {CHAIN_INNER}")
    pref = re.search(r"pref (\d+)", rule[0]).group(1)
    handle = re.search(r"handle (0x[0-9a-f]+)", rule[0]).group(1)
    say("Now somebody deletes that rule by hand:")
    mark = len(daemon.lines())
    before = count_rules()
    must_run(["tc", "filter", "del", "dev", "p0", "ingress", "chain", str(CHAIN_INNER), "pref", pref,
              "handle", handle, "protocol", "802.1Q", "flower"], ns="hv")
    fields, line, _ = daemon.wait_for("reconciled", after=mark)
    echo(f"tail -n 1 {daemon.log_path}", note="the tc notification woke it")
    out([line.strip()])
    if fields.get("added") != "1" or fields.get("dumps") != "0":
        raise DemoError(f"want the rule put back (added=1) without a dump (dumps=0): {line.strip()}")
    after = count_rules()
    must_run(f"tc filter show dev p0 ingress chain {CHAIN_INNER} | grep -c 'dst_ip 10.250.0.0/24'", ns="hv",
             note="back")
    if after != before:
        raise DemoError(f"{after} rules on p0 after the repair, {before} before")
    say("added=1 dumps=0: the notification named the rule, and the daemon put that one rule "
        "back. Removing the route takes its rules away the same way; forwarding goes back on.")
    mark = len(daemon.lines())
    must_run(["ip", "route", "del", "10.250.0.0/24"], ns="hv")
    fields, line, _ = daemon.wait_for("reconciled", after=mark)
    if fields.get("dumps") != "0" or fields.get("deleted") in (None, "0") or count_rules() != at_first:
        raise DemoError(f"want the route's rules deleted without a dump, {at_first} rules on p0 as "
                        f"before it (now {count_rules()}): {line.strip()}")
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=1"], ns="hv")


def restart_and_flush(lab, router_mac, daemon, n_rules):
    heading(9, "Stop, restart, flush",
            ["SIGTERM stops the daemon and leaves its rules in place, so the fast path keeps "
             "forwarding while it is down (an upgrade, a restart): we send blue -> red again "
             "to see it. On start it adopts its own "
             "rules that are already right: a restart with nothing changed sends no filter "
             "change (`messages=0`). `--flush` removes every rule carrying its cookie, and "
             "nothing else."])
    on_p0 = count_rules()
    rc = daemon.stop()
    if rc != 0:
        raise DemoError(f"dpoffloadd exited {rc} on SIGTERM, want 0")
    count = "tc filter show dev p0 ingress | grep -c ' handle '"
    must_run(count, ns="hv", note="its rules on p0, with the daemon down")
    if count_rules() != on_p0:
        raise DemoError(f"{count_rules()} rules left on p0 after SIGTERM, want {on_p0}")
    say("And they still route, with the kernel's forwarding off again:")
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=0"], ns="hv")
    blue_to_red(lab, router_mac, 40002, b"hello red, daemon down")

    say("Start it again, with nothing changed:")
    daemon = Daemon("hv", MAPPING, daemon.log_path.replace(".log", "-2.log"))
    fields, line, secs = daemon.wait_for("reconciled")
    echo(f"tail -n 1 {daemon.log_path}", note=f"after {secs:.1f} s")
    out([line.strip()])
    if fields.get("messages") != "0" or fields.get("kept") != str(n_rules):
        raise DemoError(f"want messages=0 kept={n_rules} on a restart: {line.strip()}")
    say(f"kept={fields.get('kept')} added=0 messages=0: it found its {n_rules} rules right and sent "
        "the kernel nothing. Now stop it and remove its rules:")
    rc = daemon.stop()
    if rc != 0:
        raise DemoError(f"dpoffloadd exited {rc} on SIGTERM, want 0")
    must_run(["dpoffloadd", "--flush", "--config", MAPPING], ns="hv")
    r = run(count, ns="hv", must=False, note="grep exits 1: none found")
    if count_rules() != 0:
        raise DemoError(f"{count_rules()} rules left after --flush")
    return r


def summary():
    print("=" * WIDTH)
    print(" What you saw")
    print("=" * WIDTH)
    for item in [
            "dpoffloadd reads a mapping file (here examples/vlan.json: VLANs 100 and 101 inner, "
            "200 outer) and the kernel's links, addresses, routes and neighbours, and compiles "
            "them into chained tc flower rules on the uplink (`--dry-run` prints them).",
            "Running, it installed them in one pass (`reconciled ... added=N`); `--show` lists "
            "them with in_hw / not_in_hw (software here: p0 is a veth).",
            f"With the kernel's forwarding off, a packet from blue's VM to red's VM came back on "
            f"VLAN 101 with new MACs and TTL 63: tc routed it, and its rule and the egress "
            f"counter of VLAN 101 (mirred index 0x{MIRRED_BASE + 101:x}) counted it.",
            "A TTL 1 packet was left to the kernel, which answered ICMP time exceeded.",
            "A route added cost its own rules and no dump (`keys`, `messages`, `dumps=0`), and "
            "a rule deleted by hand was put back at once, again without a dump.",
            "SIGTERM left the rules in place and routing (hitless); a restart sent no change "
            "(messages=0); `--flush` removed them all.",
            "Not shown here (test/lab/scenarios/ has each on the wire): NAT with port chunks "
            "(nat_vlan), EVPN and Cisco ACI VXLAN (fastpath_vxlan), 10k-50k routes (scale). "
            "See README.md."]:
        print(textwrap.fill(item, WIDTH, initial_indent="  - ", subsequent_indent="    "))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-root", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    root = Path(args.source_root).resolve()
    os.chdir(root)   # so the commands shown use paths relative to the source tree
    agent = Path(args.build_dir).resolve() / "agent"
    daemon = agent / "dpoffloadd"
    examples = [str(p.relative_to(root)) for p in sorted((root / "examples").glob("*.json"))]

    print("dpoffload demo: a hypervisor in a box")
    print("-" * WIDTH)
    if os.access(daemon, os.X_OK):
        print(f"  daemon:   {daemon} (first on PATH: `dpoffloadd` below)")
        os.environ["PATH"] = f"{agent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        have_daemon = True
    else:
        print(f"  NOTE: {daemon} does not exist (yet): build it with scripts/build.sh first.")
        print("        The demo still builds the hypervisor and shows its kernel state.")
        have_daemon = False
    print(f"  mapping:  {MAPPING}")
    print(f"  examples: {', '.join(Path(e).name for e in examples) or 'none found'}")

    # scapy takes seconds to import under emulation: do it while the first steps run.
    scapy_error = []
    loader = None
    if have_daemon:
        def load():
            # Quiet its import-time warnings (e.g. "Interface lo: no address assigned" for
            # the guest's own loopback): they are about the guest, not the demo.
            logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
            try:
                labkit.load_scapy()
            except Exception as e:   # reported when the packets are about to be sent
                scapy_error.append(e)
        loader = threading.Thread(target=load, daemon=True)
        loader.start()

    t_start = time.monotonic()
    error, router_mac = None, None
    logdir = "/tmp"   # the guest's /tmp: a fresh tmpfs overlay
    lab = labkit.Lab("demo", build_dir=args.build_dir, source_root=str(root))
    try:
        build_hypervisor()
        show_kernel()
        check_examples(have_daemon, examples)
        if have_daemon:
            if failures:
                raise DemoError("the hypervisor or the examples are not as expected (see above)")
            n_rules = dry_run()
            first, n_rules = start_daemon(logdir, n_rules)
            loader.join()
            if scapy_error:
                raise DemoError(f"cannot import scapy: {scapy_error[0]}")
            router_mac = lab.mac("hv", "p0.100")
            fast_path(lab, router_mac)
            ttl_one(lab, router_mac)
            follows_the_kernel(lab, router_mac, first)
            restart_and_flush(lab, router_mac, first, n_rules)
    except (DemoError, labkit.CommandError) as e:
        error = str(e)
    finally:
        for d in daemons:
            d.kill()
        for c in list(lab._captures):
            c.close()

    print()
    if error or failures:
        print("=" * WIDTH)
        print(textwrap.fill(f"The demo stopped in {current_step[0]}: something did not behave as "
                            "described.", WIDTH, initial_indent=" ", subsequent_indent=" "))
        for f in failures:
            print(textwrap.fill(f, WIDTH, initial_indent="   - ", subsequent_indent="     "))
        if error:
            print(textwrap.fill(error, WIDTH, initial_indent="   - ", subsequent_indent="     "))
        print("=" * WIDTH)
        return 1
    if not have_daemon:
        print("=" * WIDTH)
        print(" Demo finished (without dpoffloadd: build it to see steps 3 to 9).")
        print("=" * WIDTH)
        return 0
    summary()
    print("=" * WIDTH)
    print(f" Demo finished: every step behaved ({time.monotonic() - t_start:.0f} s in the guest).")
    print("=" * WIDTH)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: GPL-2.0-or-later
"""The dpoffload demo, run inside the lab guest by `lab.py demo`.

Builds a hypervisor whose netdevs match examples/vlan.json in a network namespace,
validates every example mapping with `dpoffloadd --check`, shows the rules
`dpoffloadd --dry-run` would install, then runs the daemon in that namespace (asked
with `dpoffloadctl status` once it is up) and walks the flow chart with the kernel's
forwarding off: a packet from a VM on VLAN 100
comes back routed on VLAN 101 by tc; a TTL 1 packet is left to the kernel; a route
added costs a few rule changes and no dump, a rule deleted by hand is put back; a NAT
subscriber's first packet is punted to the daemon, gets a port chunk and leaves
translated on the transit VLAN, its reply comes back, and `dpoffloadctl nat ...` and
`nat who` name the chunk and its holder; `dpoffloadctl explain` says why a subscriber
is in the fast path and why a prefix is the kernel's; `dpoffloadctl counters` names the
egress and drop counters; the Prometheus metrics are scraped (when this build has
`--metrics`). A second hypervisor (examples/mixed.json, test/lab/vxlan_hypervisor.py's
topology) routes a VLAN packet into EVPN VXLAN and an ACI VXLAN packet out to a VLAN.
Finally the rules survive a stop, a restart sends no change (the NAT flow keeps its
translation), and --flush removes them.

It is a demo, not a test (test/lab/scenarios/ has the tests: fastpath_vlan, nat_vlan,
fastpath_vxlan, control, ...), but it stops with a clear message and exit status 1
when something does not behave.
"""

import argparse
import json
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
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # test/lab: labkit, vxlan_hypervisor
import labkit  # noqa: E402

WIDTH = 72
STEPS = 14

# The hypervisor of examples/vlan.json: (netdev, mapping name, role, vlan, IPv4, IPv6)
VLANS = [
    ("p0.100", "blue", "inner", 100, "10.100.0.1/24", "fd00:100::1/64"),
    ("p0.101", "red", "inner", 101, "10.101.0.1/24", "fd00:101::1/64"),
    ("p0.200", "transit", "outer", 200, "10.200.0.1/24", "fd00:200::1/64"),
]
VLAN_NAME = {vid: name for _d, name, _r, vid, _4, _6 in VLANS}
# Hosts the kernel would learn by ARP / neighbour discovery; static here.
BLUE_VM = ("10.100.0.10", "02:00:00:00:01:0a")
RED_VM = ("10.101.0.10", "02:00:00:00:02:0a")
GATEWAY = ("10.200.0.254", "02:00:00:00:c8:fe")
NEIGHBOURS = [
    (BLUE_VM[0], BLUE_VM[1], "p0.100", "a VM on blue"),
    (RED_VM[0], RED_VM[1], "p0.101", "a VM on red"),
    (GATEWAY[0], GATEWAY[1], "p0.200", "the default gateway on transit"),
    ("fd00:200::fe", GATEWAY[1], "p0.200", "the same gateway, IPv6"),
]
# The host's own management network: a device the mapping does not name.
MGMT = ("mgmt0", "192.168.0.1/24", "192.168.0.0/24")
REMOTE = "203.0.113.9"         # a server on the Internet, behind the transit gateway
MAPPING = "examples/vlan.json"
POOL_PREFIX = "198.51.100."    # examples/vlan.json: nat.pool 198.51.100.0/28
MAPPING_VX = "examples/mixed.json"
STATE_DIR = "/tmp/dpoffload"   # the guest's /var/lib is read-only: state and socket under /tmp
CONTROL_SOCKET = f"{STATE_DIR}/control.sock"
STATE_DIR_VX = "/tmp/dpoffload-vx"
METRICS = "127.0.0.1:9641"

# lib/core/compile/pipeline.hpp
CHAIN_INNER = 256              # kChainInner: routing chain of inner interfaces
EGRESS_VLAN_BASE = 0xd9000000  # kEgressCounterVlanBase: shared mirred of egress VLAN vid = base + vid
EGRESS_VXLAN_BASE = 0xda000000  # kEgressCounterVxlanBase: + VNI
PUNT_INDEX = 0xd9200000        # kPuntIndex: first packets to the daemon (punt pair)
REINJECT_INDEX = 0xd9200001    # kReinjectIndex: ... and back into the uplink's ingress
REINJECT_VXLAN_INDEX = 0xd9200002  # kReinjectVxlanIndex: ... into the VXLAN device's
START_TIMEOUT = 20.0           # daemon start -> `reconciled` (TCG is slow; usually < 1 s)
STOP_TIMEOUT = 10.0
FIRST_TIMEOUT = 5.0            # a NAT first packet: punted, chunk, rule, put back
NOTHING_WINDOW = 0.5           # "nothing else comes back" window, after the expected answer

failures = []
current_step = [""]   # the heading of the step running, for a failure message
step_times = []       # (n, title, monotonic start)
daemons = []          # every dpoffloadd started, killed on the way out if still running


class DemoError(Exception):
    """Something did not behave: the demo stops here and exits 1."""


# ---------------------------------------------------------------- printing

def heading(n, title, what):
    current_step[0] = f"step {n}/{STEPS} ({title})"
    step_times.append((n, title, time.monotonic()))
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


def todo(text):
    """A marked gap in the demo: something it should show once it has landed."""
    print(textwrap.fill(text, WIDTH, initial_indent="  > TODO: ", subsequent_indent="          "), flush=True)


def run(argv, ns=None, show=True, must=True, note="", output=True, shown=None):
    """Run a command (in netns `ns`), printing it like a shell session. `argv` may be a
    string: a shell command line (for pipes). `shown`: what to print instead of argv."""
    shell = isinstance(argv, str)
    cmd = ["sh", "-c", argv] if shell else list(argv)
    full = (["ip", "netns", "exec", ns] if ns else []) + cmd
    shown = shown or (argv if shell else shlex.join(argv))
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


def ip_batch(ns, cmds):
    """`ip` commands [(command without `ip`, note)] in netns `ns`, echoed one by one and run as
    one `ip -n NS -batch -`; a failure is recorded (and the batch's error shown)."""
    for c, note in cmds:
        echo(f"ip {c}", ns, note)
    r = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="".join(c + "\n" for c, _n in cmds),
                       capture_output=True, text=True)
    if r.returncode != 0:
        text = (r.stdout + r.stderr).rstrip()
        out(text.splitlines())
        print(f"      (exit status {r.returncode})", flush=True)
        failures.append(f"ip -n {ns} -batch: exit {r.returncode}: {text[-300:]}")
    return r


def must_run(argv, ns=None, **kw):
    """run(), but a failure stops the demo."""
    r = run(argv, ns=ns, must=False, **kw)
    if r.returncode != 0:
        shown = kw.get("shown") or (argv if isinstance(argv, str) else shlex.join(argv))
        raise DemoError(f"`{shown}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
    return r


def quiet(argv, ns=None):
    """Run a command without echoing it (for the demo's own bookkeeping)."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(full, capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoError(f"`{shlex.join(argv)}` failed (exit {r.returncode}): {r.stderr.strip()}")
    return r.stdout


def ctl(*args, socket=CONTROL_SOCKET, show=True, note="", must=True, limit=None):
    """dpoffloadctl against the demo's daemon, echoed as `dpoffloadctl ARGS` (the alias of
    step 5 adds --socket). must: a non-zero exit stops the demo. limit: lines shown."""
    argv = ["dpoffloadctl", "--socket", socket, *args]
    shown = shlex.join(["dpoffloadctl", *args]) if socket == CONTROL_SOCKET else shlex.join(argv)
    if show:
        echo(shown, note=note)
    r = subprocess.run(argv, capture_output=True, text=True)
    lines = (r.stdout + r.stderr).rstrip().splitlines()
    if show:
        if limit is not None and len(lines) > limit:
            out(lines[:limit] + [f"... ({len(lines) - limit} more lines)"])
        else:
            out(lines)
        if r.returncode != 0:
            print(f"      (exit status {r.returncode})", flush=True)
    if must and r.returncode != 0:
        raise DemoError(f"`{shown}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
    return r


def ctl_json(*args, socket=CONTROL_SOCKET):
    """dpoffloadctl --json ARGS, not shown: the answer as a dict."""
    r = subprocess.run(["dpoffloadctl", "--socket", socket, "--json", *args], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise DemoError(f"`dpoffloadctl --json {shlex.join(args)}` answered no JSON (exit {r.returncode}): "
                        f"{(r.stderr or r.stdout).strip()[-300:]}") from None


# ---------------------------------------------------------------- the daemon

def parse_log_line(line):
    """`<6>reconciled rules=38 kept=36 ...` -> ("reconciled", {"rules": "38", ...})."""
    m = re.match(r"<\d>(\S+)\s*(.*)$", line.strip())
    if not m:
        return None, {}
    return m.group(1), {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(2))}


class Daemon:
    """`dpoffloadd --config FILE ARGS` in netns `ns`, in the background, stderr to a log file."""

    def __init__(self, ns, config, log_path, args=()):
        self.ns, self.config, self.log_path, self.args = ns, config, log_path, list(args)
        self.shown = shlex.join(["dpoffloadd", "--config", config, *self.args]) + f" 2>{log_path} &"
        echo(self.shown, ns)
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "dpoffloadd", "--config", config, *self.args],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        daemons.append(self)
        self.t0 = time.monotonic()

    def lines(self):
        with open(self.log_path) as f:
            text = f.read()
        return text[:text.rfind("\n") + 1].splitlines()

    def events(self, event, after=0):
        return [(f, l) for e, f, l in ((*parse_log_line(l), l) for l in self.lines()[after:]) if e == event]

    def wait_for(self, event, timeout=START_TIMEOUT, after=0, pred=lambda f: True):
        """Poll the log until its first `event` line (with pred(fields)) past its first `after`
        lines: (fields, line, seconds). Raises if the daemon exits or the deadline passes first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines()[after:]:
                ev, fields = parse_log_line(line)
                if ev == event and pred(fields):
                    return fields, line, time.monotonic() - self.t0
            if self.proc.poll() is not None:
                raise DemoError(f"dpoffloadd exited with status {self.proc.returncode} before its "
                                f"'{event}' line; its log: {' | '.join(self.lines()) or '(empty)'}")
            if time.monotonic() >= deadline:
                raise DemoError(f"no '{event}' line from dpoffloadd within {timeout:.0f} s; its log: "
                                f"{' | '.join(self.lines()[-8:]) or '(empty)'}")
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


def mirred_name(idx):
    """What one of the daemon's shared mirred actions is (lib/core/compile/pipeline.hpp)."""
    if idx == PUNT_INDEX:
        return "NAT first packets to the daemon (punt pair dpo-punt)"
    if idx == REINJECT_INDEX:
        return "NAT first packets put back into p0's ingress"
    if idx == REINJECT_VXLAN_INDEX:
        return "NAT first packets put back into the VXLAN device's ingress"
    if EGRESS_VLAN_BASE <= idx < EGRESS_VLAN_BASE + 4096:
        vid = idx - EGRESS_VLAN_BASE
        return f"egress VLAN {vid}" + (f" ({VLAN_NAME[vid]})" if vid in VLAN_NAME else "")
    if EGRESS_VXLAN_BASE <= idx < EGRESS_VXLAN_BASE + (1 << 24):
        return f"egress VNI {idx - EGRESS_VXLAN_BASE}"
    return "not one of dpoffloadd's"


def punt_count():
    text = quiet(["tc", "-s", "actions", "get", "action", "mirred", "index", str(PUNT_INDEX)], "hv")
    m = re.search(r"Sent \d+ bytes (\d+) pkt", text)
    return int(m.group(1)) if m else None


def show_punt_count(note):
    echo(f"tc -s actions get action mirred index {PUNT_INDEX} | grep Sent", "hv", note)
    n = punt_count()
    out([f"Sent ... {n} pkt    <- 0x{PUNT_INDEX:x}: {mirred_name(PUNT_INDEX)}"])
    return n


# ---------------------------------------------------------------- frames

def frame_row(label, pkt):
    from scapy.layers.inet import IP
    vl = ",".join(str(v) for v in labkit.vlans(pkt)) or "-"
    return f"{label:<12} {vl:>4}  {pkt.src}  {pkt.dst}  {pkt[IP].ttl:>3}"


def frame_table(rows):
    out([f"{'':<12} vlan  {'src mac':<17}  {'dst mac':<17}  ttl"] + rows)


def flow_row(label, pkt):
    from scapy.layers.inet import IP, UDP
    vl = ",".join(str(v) for v in labkit.vlans(pkt)) or "-"
    src = f"{pkt[IP].src}:{pkt[UDP].sport}"
    dst = f"{pkt[IP].dst}:{pkt[UDP].dport}"
    return f"{label:<10} {vl:>4}  {src:<21} {dst:<21} {pkt[IP].ttl:>3}"


def flow_table(rows):
    out([f"{'':<10} vlan  {'src':<21} {'dst':<21} ttl"] + rows)


def udp_from_blue(router_mac, dst_ip, sport, payload, ttl=64, dport=5001):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    return (Ether(src=BLUE_VM[1], dst=router_mac) / Dot1Q(vlan=100)
            / IP(src=BLUE_VM[0], dst=dst_ip, ttl=ttl) / UDP(sport=sport, dport=dport) / payload)


def udp_from_outside(router_mac, dst_ip, dport, payload, sport=53):
    """A packet from REMOTE arriving on transit (VLAN 200) from the gateway."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    return (Ether(src=GATEWAY[1], dst=router_mac) / Dot1Q(vlan=200)
            / IP(src=REMOTE, dst=dst_ip, ttl=64) / UDP(sport=sport, dport=dport) / payload)


def l4_checksum_ok(pkt):
    """Whether the frame's UDP checksum is right (NAT must fix it)."""
    from scapy.layers.inet import IP, UDP
    ip = IP(bytes(pkt[IP]))
    want = ip[UDP].chksum
    del ip[UDP].chksum
    return IP(bytes(ip))[UDP].chksum == want


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
             "The kernel routes between them: it is the slow path dpoffloadd accelerates. "
             f"{MGMT[0]} is the host's management network, which the mapping leaves alone."])
    for ns in ("hv", "fabric"):
        if os.path.exists(f"/run/netns/{ns}"):
            run(["ip", "netns", "del", ns], show=False, must=False)
        run(["ip", "netns", "add", ns])
    # Process starts are slow under emulation: each namespace's commands go to one
    # `ip -batch`, shown one by one as an operator would type them.
    ip_batch("hv", [("link set lo up", ""),
                    ("link add p0 type veth peer name fab0 netns fabric", "the uplink"),
                    ("link set p0 up", "")])
    ip_batch("fabric", [("link set fab0 up", "")])
    cmds = []
    for dev, name, role, vid, v4, v6 in VLANS:
        cmds += [(f"link add link p0 name {dev} type vlan id {vid}", f"interface '{name}', role {role}"),
                 (f"addr add {v4} dev {dev}", ""), (f"addr add {v6} dev {dev} nodad", ""),
                 (f"link set {dev} up", "")]
    cmds += [(f"link add {MGMT[0]} type dummy", "management, not in the mapping"),
             (f"addr add {MGMT[1]} dev {MGMT[0]}", ""), (f"link set {MGMT[0]} up", "")]
    cmds += [(f"neigh replace {addr} lladdr {mac} dev {dev} nud permanent", what)
             for addr, mac, dev, what in NEIGHBOURS]
    cmds += [(f"route add default via {GATEWAY[0]} dev p0.200", "default route out of the transit side"),
             ("route add ::/0 via fd00:200::fe dev p0.200", "the same, IPv6")]
    ip_batch("hv", cmds)
    say("(Each namespace's `ip` commands run as one `ip -batch`: process starts are slow in "
        "an emulated guest.)")
    run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], ns="hv",
        note="a router")


def show_kernel():
    heading(2, "What the kernel now holds (namespace 'hv')",
            ["These are the tables dpoffloadd reads: links (the VLAN sub-interfaces and their "
             "ids), addresses, routes (longest-prefix match picks the egress interface) and "
             "neighbours (the next hop's MAC address)."])
    run(["ip", "-d", "link", "show", "dev", "p0.101"], ns="hv")
    run(["ip", "-br", "link"], ns="hv")
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
             f"{RED_VM[0]}, a VM on red), and the notes on what it leaves to the kernel. The "
             "dry run is the static program: the NAT stage (conntrack rules, the punt pair "
             "that brings a subscriber's first packet to the daemon) needs the running "
             "daemon, so here inner -> outer IPv4 is noted as left to the kernel; step 5 "
             "shows the daemon add it."])
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
    red = EGRESS_VLAN_BASE + 101
    say(f"{m.group(1) if m else len(rules)} rules in all. The forwarding rule does what the kernel's "
        "forwarding would: rewrite the MACs (dst: the neighbour's, src: the router's), TTL - 1 "
        "(`ttl add 255`), fix the IPv4 checksum, swap VLAN 100's tag for VLAN 101's, and send the "
        f"frame back out of the uplink through the shared mirred action of VLAN 101 (index "
        f"{red} = 0x{red:x}: 0x{EGRESS_VLAN_BASE:x} + the VLAN id), whose counter is red's "
        f"egress counter.")
    return int(m.group(1)) if m else len(rules)


def start_daemon(logdir, n_rules, metrics):
    heading(5, "Start the daemon, ask it how it is",
            ["Without a mode, dpoffloadd stays in the foreground: it follows links, addresses, "
             "routes and neighbours over netlink (and conntrack, for NAT) and keeps the rules "
             "on p0 in step with them. Here it runs in the background in 'hv' and logs to a "
             "file; we wait for its `reconciled` line, which says what it sent to the kernel. "
             f"Its control socket and state directory go under {STATE_DIR} (the defaults, "
             "/run/dpoffload and /var/lib/dpoffload, are read-only in this guest)"
             + (f", and it serves Prometheus metrics on {METRICS}." if metrics else "."),
             "p0 is a veth in this lab, so every rule runs in the kernel's software tc "
             "(`not_in_hw`); on a ConnectX port in switchdev mode mlx5 offloads them (`in_hw`)."])
    must_run(["mkdir", "-p", STATE_DIR])
    args = ["--state-dir", STATE_DIR, "--control-socket", CONTROL_SOCKET] + (["--metrics", METRICS] if metrics else [])
    d = Daemon("hv", MAPPING, os.path.join(logdir, "dpoffloadd.log"), args)
    fields, line, secs = d.wait_for("reconciled")
    echo(f"cat {d.log_path}", note=f"its `reconciled` line came after {secs:.1f} s")
    out(d.lines())
    if fields.get("refused") != "0" or int(fields.get("rules", 0)) < n_rules:
        raise DemoError(f"want rules>={n_rules} refused=0: {line.strip()}")
    if not d.events("nat-running"):
        raise DemoError(f"no `nat-running` line: the NAT stage did not start; its log: {' | '.join(d.lines())}")
    if int(fields["rules"]) > n_rules:
        say(f"{fields['rules']} rules, {int(fields['rules']) - n_rules} more than the dry run: `nat-running` "
            "says the NAT stage is up, and it adds the conntrack rules for inner -> outer IPv4, "
            "the outer side's return path, and the punt pair dpo-punt / dpo-inject that carries "
            "a subscriber's first packet to the daemon and back.")
    echo(f"alias dpoffloadctl='dpoffloadctl --socket {CONTROL_SOCKET}'", note="the daemon's socket")
    ctl("status", note="what the daemon holds, from its own state (not a dump)")
    st = ctl_json("status")
    total = st.get("rules", {}).get("total", {})
    if total.get("installed") != int(fields["rules"]) or total.get("refused") != 0 \
            or st.get("nat", {}).get("state") != "running":
        raise DemoError(f"status disagrees with the log: rules {total}, nat {st.get('nat')}, log: {line.strip()}")
    say(f"Every rule it wants is installed ({total.get('installed')}), none refused, all not_in_hw "
        "(software: a veth); the NAT stage is running.")
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
    heading(6, "VLAN routing in tc: blue -> red, kernel forwarding off",
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
    echo("tc -s actions show action mirred", "hv", "the daemon's shared mirred actions")
    actions = tc_blocks(quiet(["tc", "-s", "actions", "show", "action", "mirred"], "hv"), "action order")
    shown, red = [], None
    for b in actions:
        m = re.search(r"index (\d+)", "\n".join(b))
        idx = int(m.group(1)) if m else 0
        sent = next((l.strip() for l in b if "Sent " in l), "?")
        idx_line = next((l.strip() for l in b if l.strip().startswith("index ")), "")
        shown += [b[0].strip(), f"  {idx_line}    <- 0x{idx:x}: {mirred_name(idx)}", f"  {sent}"]
        if idx == EGRESS_VLAN_BASE + 101:
            red = packets(b)
    out(shown)
    if red != 1:
        raise DemoError(f"the mirred counter of VLAN 101 (index {EGRESS_VLAN_BASE + 101}) is {red}, want 1")
    say("One mirred action per egress VLAN (0xd9000000 + VLAN id), shared by every rule that "
        "sends out of it: its counter is that interface's egress counter (red's counted our "
        "packet). The 0xd92000xx ones are NAT's first-packet path, idle so far (step 9).")


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
        "back. Removing the route takes its rules away the same way.")
    mark = len(daemon.lines())
    must_run(["ip", "route", "del", "10.250.0.0/24"], ns="hv")
    fields, line, _ = daemon.wait_for("reconciled", after=mark)
    if fields.get("dumps") != "0" or fields.get("deleted") in (None, "0") or count_rules() != at_first:
        raise DemoError(f"want the route's rules deleted without a dump, {at_first} rules on p0 as "
                        f"before it (now {count_rules()}): {line.strip()}")


def nat_first_packet(lab, router_mac, daemon):
    heading(9, "NAT: a subscriber's first packet, its port chunk, its reply",
            ["examples/vlan.json has a `nat` section: inner -> outer IPv4 is source-NATed "
             "through conntrack (zone 1) into pool 198.51.100.0/28, each subscriber getting "
             "ports in chunks of 512 (at most 4). The chunks are the daemon's; conntrack "
             "picks the port inside the subscriber's chunk, in tc (act_ct), not the kernel's "
             "forwarding, which stays off.",
             f"Blue's VM ({BLUE_VM[0]}) is a subscriber with no chunk yet. Its first packet to "
             f"{REMOTE} (the default route, out of transit) matches no subscriber rule, so tc "
             "punts it to the daemon over the punt pair; the daemon allocates a chunk, installs "
             "the subscriber's rule and puts the packet back. We watch it leave on VLAN 200, "
             "then send the server's reply and a second packet of the flow."])
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=0"], ns="hv")
    punted0 = show_punt_count("first packets punted so far")
    mark = len(daemon.lines())
    payload = b"hello internet, first packet"
    frame = udp_from_blue(router_mac, REMOTE, 40100, payload, dport=53)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 100, {BLUE_VM[0]}:40100 -> {REMOTE}:53, ttl 64",
         "fabric")
    cap = lab.capture("fabric", "fab0")
    try:
        t0 = time.time()
        lab.send("fabric", "fab0", frame)
        got = cap.expect(labkit.payload_is(payload), FIRST_TIMEOUT)
        others = cap.others_summary()
    finally:
        cap.close()
    if got is None:
        raise DemoError(f"the first packet did not leave on transit within {FIRST_TIMEOUT:.0f} s; {others}; "
                        f"daemon log: {' | '.join(daemon.lines()[mark:]) or '(nothing new)'}")
    t_first = time.monotonic()
    from scapy.layers.inet import IP, UDP
    public, pport = got[IP].src, got[UDP].sport
    flow_table([flow_row("sent", frame), flow_row("left", got)])
    fields, line, _ = daemon.wait_for("chunk-allocated", timeout=2.0, after=mark,
                                      pred=lambda f: f.get("subscriber") == BLUE_VM[0])
    lo, _, hi = fields.get("ports", "0-0").partition("-")
    lo, hi = int(lo), int(hi or 0)
    bad = labkit.Lab.mismatches([
        ("vlans", labkit.vlans(got), [200]), ("dst mac", got.dst, GATEWAY[1]), ("src mac", got.src, router_mac),
        ("src ip (the chunk's)", public, fields.get("public")), ("src port in chunk", lo <= pport <= hi, True),
        ("dst", (got[IP].dst, got[UDP].dport), (REMOTE, 53)), ("ttl", got[IP].ttl, 63),
        ("ipv4 checksum valid", labkit.ipv4_checksum_ok(got), True),
        ("udp checksum valid", l4_checksum_ok(got), True)])
    if bad:
        raise DemoError(f"the first packet left, but not translated into its chunk and routed: {bad}")
    say(f"It left {(got.time - t0) * 1000:.0f} ms after it was sent, on VLAN 200 to the gateway's MAC, "
        f"as {public}:{pport}, TTL 63, checksums valid. The daemon's log has the chunk:")
    echo(f"grep chunk-allocated {daemon.log_path}")
    out([line.strip()])
    punted = show_punt_count("the first packet went through the daemon")
    if punted is None or punted0 is None or punted - punted0 != 1:
        raise DemoError(f"the punt counter went {punted0} -> {punted}, want +1")

    say(f"The server answers {public}:{pport}; conntrack in tc translates it back:")
    reply_payload = b"hello subscriber, reply"
    reply = udp_from_outside(router_mac, public, pport, reply_payload)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 200, {REMOTE}:53 -> {public}:{pport}, ttl 64", "fabric")
    back, cap = lab.send_expect("fabric", "fab0", reply, "fabric", "fab0", labkit.payload_is(reply_payload))
    if back is None:
        raise DemoError(f"the reply to {public}:{pport} did not come back to {BLUE_VM[0]}; {cap.others_summary()}")
    flow_table([flow_row("sent", reply), flow_row("came back", back)])
    bad = labkit.Lab.mismatches([
        ("vlans", labkit.vlans(back), [100]), ("dst mac", back.dst, BLUE_VM[1]),
        ("dst", (back[IP].dst, back[UDP].dport), (BLUE_VM[0], 40100)), ("ttl", back[IP].ttl, 63),
        ("udp checksum valid", l4_checksum_ok(back), True)])
    if bad:
        raise DemoError(f"the reply came back, but not de-translated to the subscriber: {bad}")

    say("What the daemon says about it, through its control socket:")
    r = ctl("nat", "subscribers")
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if last.startswith("([{"):
        raise DemoError("nat subscribers prints the list of subscribers where its count belongs")
    ctl("nat", "chunks")
    ctl("nat", "pool", "--limit", "4", note="the first 4 of the pool's 16 addresses")
    r = ctl("nat", "who", f"{public}:{pport}", note="the address and port seen on the wire")
    if BLUE_VM[0] not in r.stdout:
        raise DemoError(f"`nat who {public}:{pport}` does not name {BLUE_VM[0]}: {r.stdout.strip()}")
    pool = ctl_json("nat", "pool", "--limit", "0")
    use = next((a for a in pool.get("pool", []) if a.get("address") == public), None)
    if use is None or use.get("held") != 1:
        raise DemoError(f"nat pool does not show one chunk held on {public}: {use}")
    subs = ctl_json("nat", "subscribers")
    row = next((s for s in subs.get("subscribers", []) if s.get("subscriber") == BLUE_VM[0]), None)
    if row is None or row.get("chunks") != 1 or row.get("public") != public or row.get("ports") != [f"{lo}-{hi}"]:
        raise DemoError(f"nat subscribers does not show {BLUE_VM[0]} with its chunk {public} {lo}-{hi}: {row}")
    say(f"`nat who` answers from the daemon's record of chunk events under {STATE_DIR}, which "
        "outlives the daemon: `--at 2026-11-23T14:02:00Z` asks about any past moment.")

    # A later packet more than 2 s after the first: conntrack sees a UDP stream and keeps it
    # (120 s), so the flow is still there for the restart of step 14.
    time.sleep(max(0.0, 2.2 - (time.monotonic() - t_first)))
    say("A later packet of the same flow is not punted: the subscriber's rule and conntrack "
        "take it in tc, with the same address and port.")
    payload = b"hello internet, again"
    frame = udp_from_blue(router_mac, REMOTE, 40100, payload, dport=53)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 100, {BLUE_VM[0]}:40100 -> {REMOTE}:53, ttl 64",
         "fabric")
    again, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0", labkit.payload_is(payload))
    if again is None:
        raise DemoError(f"the second packet of the flow did not leave; {cap.others_summary()}")
    flow_table([flow_row("sent", frame), flow_row("left", again)])
    if (again[IP].src, again[UDP].sport) != (public, pport):
        raise DemoError(f"the second packet left as {again[IP].src}:{again[UDP].sport}, not {public}:{pport}")
    n = show_punt_count("unchanged")
    if n != punted:
        raise DemoError(f"the second packet of the flow was punted too (counter {punted} -> {n})")
    return public, pport, (lo, hi)


def explain(public, pport):
    heading(10, "Why: dpoffloadctl explain",
            ["`explain` takes a subscriber, an address, a prefix or an interface and answers "
             "from the compiler's own keys: which rules carry it, or why the fast path leaves "
             "it to the kernel.",
             f"First the subscriber of step 9, then the management network's prefix {MGMT[2]} "
             f"({MGMT[0]} is not in the mapping)."])
    r = ctl("explain", BLUE_VM[0], limit=40)
    if f"subscriber {BLUE_VM[0]}" not in r.stdout or "in the fast path" not in r.stdout:
        raise DemoError(f"explain {BLUE_VM[0]} does not say its subscriber key is in the fast path")
    r = ctl("explain", MGMT[2], limit=25)
    note = f"note: route {MGMT[2]}: egress {MGMT[0]} is not a mapped interface"
    if note not in r.stdout or "left to the kernel" not in r.stdout:
        raise DemoError(f"explain {MGMT[2]} does not say it is left to the kernel because of {MGMT[0]}")
    say("The subscriber: its chunk, the rule that commits its new connections into that chunk "
        "(chain 32768 = 0x8000), and its host rules, which route the replies back to it. "
        f"{MGMT[2]} goes out of {MGMT[0]}, which is no mapped interface, so the fast path leaves "
        "it to the kernel: its rules in the routing chains only hand such packets to the "
        "kernel (`gact pass`), whose routing is the slow path, and the compiler's note says why.")
    if f"route {MGMT[2]}: in the fast path" in r.stdout:
        raise DemoError(f"explain calls route {MGMT[2]} 'in the fast path', though its rules only hand "
                        "its packets to the kernel")


def counters():
    """Step 11; whether the daemon answers `counters`."""
    heading(11, "Counters by name",
            ["`dpoffloadctl counters` reads the shared egress and drop actions and names them: "
             "packets and bytes per egress interface (and the NAT first-packet path), packets "
             "dropped per reason, where `tc -s actions` shows hex indices."])
    r = ctl("counters", must=False)
    if r.returncode != 0 and "unknown command" in (r.stdout + r.stderr):
        todo("this daemon does not answer `counters` yet (the colleague's change adding it "
             "has not landed): show `dpoffloadctl counters` here once it has, and check that "
             "red's egress and the punt path counted steps 6 and 9.")
        say("Meanwhile, the rules with their packet counters:")
        ctl("rules", "--limit", "5")
        return False
    if r.returncode != 0:
        raise DemoError(f"`dpoffloadctl counters` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()}")
    data = ctl_json("counters").get("counters", [])

    def egress(name):
        return next((c.get("packets", 0) for c in data if c.get("kind") == "egress" and c.get("name") == name), None)
    red, transit, punt = egress("red"), egress("transit"), egress("nat-punt")
    if red is None or red < 2 or transit is None or transit < 2 or punt != 1:
        raise DemoError(f"`counters` does not have what steps 6, 8 and 9 sent: egress red {red} (want >= 2), "
                        f"transit {transit} (want >= 2), nat-punt {punt} (want 1)")
    say(f"red's egress counted the packets of steps 6 and 8 ({red}), transit's the NAT flow of step 9 "
        f"({transit}), nat-punt its first packet ({punt}).")
    return True


def metrics_step(metrics, lab):
    heading(12, "Prometheus metrics",
            [f"With `--metrics {METRICS}` the daemon serves Prometheus' text format at "
             "/metrics: rules by device and state, reconcile and audit counts and latencies, "
             "egress and drops by name, NAT subscribers, chunks, pool use, first-packet punts "
             "and their latency (docs/metrics.md has every family)."])
    if not metrics:
        say("Skipped: this build's `dpoffloadd --help` has no --metrics (the metrics work has "
            "not landed in it yet).")
        return
    url = f"http://{METRICS}/metrics"
    # What is shown: p0's rules by state, the first-packet punts, the chunk allocations, and
    # the egress of red and transit (the lines of the echoed grep, as served).
    shown = (r'^dpoffload_(rules\{device="p0"|nat_first_packets_punted_total|nat_chunk_allocations_total'
             r'|egress_packets_total\{.*interface="(red|transit)")')
    echo(f"python3 -c 'import urllib.request; print(urllib.request.urlopen(\"{url}\").read().decode())' "
         f"| grep -E '{shown}'", "hv", "a scrape")
    try:
        with lab.netns("hv"):
            t0 = time.monotonic()
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            took = time.monotonic() - t0
    except OSError as e:
        raise DemoError(f"GET {url} in hv failed: {e}") from None
    out([line for line in text.splitlines() if re.match(shown, line)])
    samples = {}
    for line in text.splitlines():
        m = re.match(r"^(dpoffload_[a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m:
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))

    def value(name):
        return samples.get(name)
    punted = value("dpoffload_nat_first_packets_punted_total")
    allocs = value("dpoffload_nat_chunk_allocations_total")
    installed = value('dpoffload_rules{device="p0",state="installed"}')
    if not punted or punted < 1 or allocs != 1 or not installed:
        raise DemoError(f"the scrape lacks what steps 5 and 9 did: rules installed on p0 {installed}, "
                        f"first packets punted {punted} (want >= 1), chunk allocations {allocs} (want 1)")
    families = {re.sub(r"_(bucket|sum|count)$", "", k.split("{")[0]) for k in samples}
    say(f"{len(samples)} samples of {len(families)} families in {took * 1000:.0f} ms; the first packet "
        "of step 9 is there (punted, one chunk allocated), as are p0's rules by state and the "
        "egress counters by interface name.")


def vxlan_hop(lab, logdir):
    heading(13, "EVPN and Cisco ACI: routed into and out of VXLAN",
            ["A second hypervisor, in namespaces 'vx' and 'vxfab', as "
             "test/lab/vxlan_hypervisor.py builds it (docs/hypervisor-vxlan.md explains each "
             f"step): the EVPN VTEP 10.0.1.1 on p0, the ACI VTEP 10.0.2.1 on infra VLAN 2, "
             "one metadata-mode VXLAN device vxlan0 in a VLAN-aware bridge br0, and the SVIs "
             "svi-green (EVPN VNI 5001) and svi-web (ACI VNI 6001) beside VLANs 100 and 200. "
             f"{MAPPING_VX} maps exactly that. Kernel forwarding is off in 'vx' too.",
             "One VLAN packet goes into EVPN (encapsulated by tc on the way out), one ACI "
             "packet comes out to a VLAN (decapsulated by the kernel's vxlan0, routed by tc "
             "on vxlan0's ingress)."])
    import vxlan_hypervisor as vh
    topo = vh.Topology(hv="vx", fab="vxfab")
    built = topo.build(lab)
    keep = ("type bridge", "type vxlan", "master br0", "vlan_tunnel", "tunnel_info", "vni add",
            "link add link br0", " dst 10.0.")
    shown = [c for c in built.commands if any(k in c for k in keep)]
    for c in shown:
        echo(c, "vx")
    say(f"... and {len(built.commands) - len(shown)} more (p0, infra VLAN 2, addresses, neighbours, fdb "
        "entries, routes), run as one `ip -batch` and one `bridge -batch` each time.")
    must_run(["mkdir", "-p", STATE_DIR_VX])
    d = Daemon("vx", MAPPING_VX, os.path.join(logdir, "dpoffloadd-vx.log"),
               ["--state-dir", STATE_DIR_VX, "--control-socket", f"{STATE_DIR_VX}/control.sock"])
    fields, line, secs = d.wait_for("reconciled")
    echo(f"tail -n 1 {d.log_path}", note=f"after {secs:.1f} s")
    out([line.strip()])
    if fields.get("refused") != "0":
        raise DemoError(f"the VXLAN hypervisor's daemon refused rules: {line.strip()}")

    def describe(label, pkt):
        w = vh.decode(pkt)
        rows = []
        tag = "vlan " + ",".join(map(str, w["vlans"])) if w["vlans"] else "untagged"
        if w["vni"] is not None:
            rows.append(f"{label:<10} {tag:<9} {w['src mac']} > {w['dst mac']}  VXLAN {w['outer src ip']} > "
                        f"{w['outer dst ip']} udp {w['udp dport']} vni {w['vni']}")
            rows.append(f"{'':<10} {'inside:':<9} {w['inner src mac']} > {w['inner dst mac']}  "
                        f"{w['src ip']} > {w['dst ip']} ttl {w['ttl']}")
        else:
            rows.append(f"{label:<10} {tag:<9} {w['src mac']} > {w['dst mac']}  "
                        f"{w['src ip']} > {w['dst ip']} ttl {w['ttl']}")
        return rows

    for src, dst_seg, what in (("blue", "green", "VLAN 100 -> EVPN VNI 5001"),
                               ("web", "blue", "ACI VNI 6001 -> VLAN 100")):
        seg = topo.segments[dst_seg]
        payload = f"hello {dst_seg}, from {src}".encode()
        frame = topo.host_frame(src, seg.host4, 41000 + len(payload), payload)
        f = vh.decode(frame)
        wire = (f"vlan {f['vlans'][0]}" if f["vni"] is None else
                f"vxlan {f['outer src ip']} -> {f['outer dst ip']} vni {f['vni']}"
                + (f" on vlan {f['vlans'][0]}" if f["vlans"] else ""))
        echo(f"send one UDP packet out of fab0 (scapy): {wire}, {f['src ip']} -> {f['dst ip']}, ttl 64   # {what}",
             "vxfab")
        got, cap = lab.send_expect("vxfab", "fab0", frame, "vxfab", "fab0", vh.payload_match(payload))
        if got is None:
            raise DemoError(f"{what}: the packet did not come back routed; {cap.others_summary()}")
        out(describe("sent", frame) + describe("came back", got))
        bad = vh.mismatches(lab, got, topo.routed(frame, dst_seg))
        if bad:
            raise DemoError(f"{what}: the packet came back, but not routed as the kernel would: {bad}")
    say("Into EVPN: tc set the tunnel key (10.0.1.1 -> 10.0.1.2, VNI 5001) and sent it through "
        "vxlan0, inner MACs rewritten (svi-green's -> green's host), TTL 63. Out of ACI: "
        "the frame from VTEP 10.0.2.10 on VLAN 2 was decapsulated by vxlan0, whose tc rule "
        "for VNI 6001 routed it to VLAN 100. The decap rules counted it:")
    echo("tc -s filter show dev vxlan0 ingress chain 0", "vx", "one rule per EVPN / ACI interface")
    decap = vh.decap_rules(lab, ns="vx")
    out([f"vni {vni}: enc_dst_ip {r.keys.get('enc_dst_ip')} enc_dst_port {r.keys.get('enc_dst_port')} "
         f"dst_mac {r.keys.get('dst_mac')} -> {r.actions[0] if r.actions else '?'}: {r.pkts} pkt"
         for vni, r in sorted(decap.items())])
    if decap.get("6001") is None or decap["6001"].pkts != 1:
        raise DemoError(f"the decap rule of VNI 6001 did not count the ACI packet: "
                        f"{ {v: r.pkts for v, r in decap.items()} }")
    rc = d.stop()
    if rc != 0:
        raise DemoError(f"the VXLAN hypervisor's dpoffloadd exited {rc} on SIGTERM, want 0")


def restart_and_flush(lab, router_mac, daemon, nat_flow):
    heading(14, "Stop, restart, flush",
            ["SIGTERM stops the daemon and leaves its rules in place, so the fast path keeps "
             "forwarding while it is down (an upgrade, a restart): we send blue -> red and the "
             "subscriber's flow again to see it. On start it adopts its own rules that are "
             "already right, and the NAT chunks from conntrack: a restart with nothing "
             "changed sends no filter change (`messages=0`). `--flush` removes every rule "
             "carrying its cookie, and nothing else."])
    public, pport, _chunk = nat_flow
    n_rules = ctl_json("status")["rules"]["total"]["installed"]
    on_p0 = count_rules()
    rc = daemon.stop()
    if rc != 0:
        raise DemoError(f"dpoffloadd exited {rc} on SIGTERM, want 0")
    count = "tc filter show dev p0 ingress | grep -c ' handle '"
    must_run(count, ns="hv", note="its rules on p0, with the daemon down")
    if count_rules() != on_p0:
        raise DemoError(f"{count_rules()} rules left on p0 after SIGTERM, want {on_p0}")
    say("And they still route (kernel forwarding is still off), NAT included:")
    blue_to_red(lab, router_mac, 40002, b"hello red, daemon down")
    from scapy.layers.inet import IP, UDP
    payload = b"hello internet, daemon down"
    frame = udp_from_blue(router_mac, REMOTE, 40100, payload, dport=53)
    echo(f"send one UDP packet out of fab0 (scapy): vlan 100, {BLUE_VM[0]}:40100 -> {REMOTE}:53, ttl 64",
         "fabric")
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0", labkit.payload_is(payload))
    if got is None:
        raise DemoError(f"the subscriber's flow stopped with the daemon; {cap.others_summary()}")
    flow_table([flow_row("sent", frame), flow_row("left", got)])
    if (got[IP].src, got[UDP].sport) != (public, pport):
        raise DemoError(f"with the daemon down the flow left as {got[IP].src}:{got[UDP].sport}, not {public}:{pport}")

    say("Start it again, with nothing changed:")
    daemon = Daemon("hv", MAPPING, daemon.log_path.replace(".log", "-2.log"), daemon.args)
    fields, line, secs = daemon.wait_for("reconciled")
    echo(f"grep -E 'nat-resynced|chunk-allocated|reconciled' {daemon.log_path}", note=f"after {secs:.1f} s")
    out([l.strip() for l in daemon.lines()
         if parse_log_line(l)[0] in ("nat-resynced", "chunk-allocated", "reconciled")])
    if fields.get("messages") != "0" or fields.get("kept") != str(n_rules) or daemon.events("chunk-allocated"):
        raise DemoError(f"want messages=0 kept={n_rules} and no chunk allocated anew on a restart: {line.strip()}")
    r = ctl("nat", "who", f"{public}:{pport}", note="the chunk, adopted from conntrack")
    if BLUE_VM[0] not in r.stdout:
        raise DemoError(f"after the restart `nat who {public}:{pport}` does not name {BLUE_VM[0]}")
    say(f"kept={fields.get('kept')} added=0 messages=0: it found its {n_rules} rules right, took the "
        "subscriber's chunk back from conntrack, and sent the kernel nothing. Now stop it and "
        "remove its rules:")
    rc = daemon.stop()
    if rc != 0:
        raise DemoError(f"dpoffloadd exited {rc} on SIGTERM, want 0")
    must_run(["dpoffloadd", "--flush", "--config", MAPPING], ns="hv")
    r = run(count, ns="hv", must=False, note="grep exits 1: none found")
    if count_rules() != 0:
        raise DemoError(f"{count_rules()} rules left after --flush")
    must_run(["sysctl", "-w", "net.ipv4.ip_forward=1"], ns="hv", note="the kernel routes alone again")
    return r


def summary(metrics, counters_landed):
    print("=" * WIDTH)
    print(" What you saw")
    print("=" * WIDTH)
    for item in [
            "dpoffloadd reads a mapping file (here examples/vlan.json: VLANs 100 and 101 inner, "
            "200 outer, a NAT pool) and the kernel's links, addresses, routes and neighbours, and "
            "compiles them into chained tc flower rules on the uplink (`--dry-run` prints them).",
            "Running, it installed them in one pass (`reconciled ... added=N`) with its NAT stage; "
            "`dpoffloadctl status` showed them per device, in_hw / not_in_hw (software here: p0 "
            "is a veth).",
            f"With the kernel's forwarding off, a packet from blue's VM to red's VM came back on "
            f"VLAN 101 with new MACs and TTL 63: tc routed it, and its rule and red's egress "
            f"counter (mirred 0x{EGRESS_VLAN_BASE + 101:x}) counted it.",
            "A TTL 1 packet was left to the kernel, which answered ICMP time exceeded.",
            "A route added cost its own rules and no dump (`keys`, `messages`, `dumps=0`), and "
            "a rule deleted by hand was put back at once, again without a dump.",
            "A NAT subscriber's first packet was punted to the daemon, got a port chunk and left "
            "translated on the transit VLAN; the reply came back de-translated, a later packet "
            "was not punted. `dpoffloadctl nat subscribers|chunks|pool` showed the chunk and "
            "`nat who` named the subscriber of the address:port seen on the wire.",
            "`dpoffloadctl explain` said why the subscriber is in the fast path and why the "
            "management prefix is the kernel's; "
            + ("`dpoffloadctl counters` named the egress and drop counters."
               if counters_landed else "`dpoffloadctl rules` showed rules with their counters "
               "(`counters` by name: TODO, not in this build yet)."),
            ("The Prometheus endpoint (`--metrics`) served rules by state, punts and chunk "
             "allocations." if metrics else
             "Metrics: skipped, not in this build yet (`dpoffloadd --metrics`)."),
            "On a second hypervisor (examples/mixed.json), a VLAN packet was routed into EVPN "
            "VXLAN (encapsulated by tc) and an ACI VXLAN packet out to a VLAN (routed by tc on "
            "vxlan0), forwarding off there too.",
            "SIGTERM left the rules in place and routing, NAT included (hitless); a restart "
            "adopted the chunk from conntrack and sent no change (messages=0); `--flush` "
            "removed them all.",
            "The lab suite checks each of these on the wire (test/lab/scenarios/: fastpath_vlan, "
            "nat_vlan, fastpath_vxlan, control, ...), and at 10k-50k routes (scale). See README.md."]:
        print(textwrap.fill(item, WIDTH, initial_indent="  - ", subsequent_indent="    "))


def step_time_table(t_end):
    """Guest wall time per step (TCG-emulated: slow, and the host may be shared)."""
    print()
    print(" Guest time per step")
    marks = step_times + [(None, None, t_end)]
    for (n, title, t0), (_n, _t, t1) in zip(marks, marks[1:]):
        print(f"  {n:>2}  {t1 - t0:6.1f} s  {title}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-root", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    root = Path(args.source_root).resolve()
    os.chdir(root)   # so the commands shown use paths relative to the source tree
    build = Path(args.build_dir).resolve()
    agent = build / "agent"
    daemon = agent / "dpoffloadd"
    ctl_bin = build / "ctl" / "dpoffloadctl"
    examples = [str(p.relative_to(root)) for p in sorted((root / "examples").glob("*.json"))]

    print("dpoffload demo: a hypervisor in a box")
    print("-" * WIDTH)
    have_daemon = os.access(daemon, os.X_OK) and os.access(ctl_bin, os.X_OK)
    metrics = False
    if have_daemon:
        print(f"  daemon:   {daemon} (first on PATH: `dpoffloadd` below)")
        print(f"  ctl:      {ctl_bin}")
        os.environ["PATH"] = f"{agent}:{ctl_bin.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        help_text = subprocess.run([str(daemon), "--help"], capture_output=True, text=True).stdout
        metrics = "--metrics" in help_text
    else:
        print(f"  NOTE: {daemon} or {ctl_bin} does not exist (yet): build them with scripts/build.sh first.")
        print("        The demo still builds the hypervisor and shows its kernel state.")
    print(f"  mapping:  {MAPPING} (and {MAPPING_VX} in step 13)")
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
    error, router_mac, counters_landed = None, None, False
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
            first, _n = start_daemon(logdir, n_rules, metrics)
            loader.join()
            if scapy_error:
                raise DemoError(f"cannot import scapy: {scapy_error[0]}")
            router_mac = lab.mac("hv", "p0.100")
            fast_path(lab, router_mac)
            ttl_one(lab, router_mac)
            follows_the_kernel(lab, router_mac, first)
            nat_flow = nat_first_packet(lab, router_mac, first)
            explain(*nat_flow[:2])
            counters_landed = counters()
            metrics_step(metrics, lab)
            vxlan_hop(lab, logdir)
            restart_and_flush(lab, router_mac, first, nat_flow)
    except (DemoError, labkit.CommandError) as e:
        error = str(e)
    finally:
        for d in daemons:
            d.kill()
        for c in list(lab._captures):
            c.close()
    t_end = time.monotonic()

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
        step_time_table(t_end)
        return 1
    if not have_daemon:
        print("=" * WIDTH)
        print(f" Demo finished (without dpoffloadd: build it to see steps 3 to {STEPS}).")
        print("=" * WIDTH)
        return 0
    summary(metrics, counters_landed)
    print("=" * WIDTH)
    print(f" Demo finished: every step behaved ({t_end - t_start:.0f} s in the guest).")
    print("=" * WIDTH)
    step_time_table(t_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())

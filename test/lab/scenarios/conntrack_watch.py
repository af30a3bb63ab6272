# SPDX-License-Identifier: GPL-2.0-or-later
"""kernel::ConntrackWatcher (NAT accounting's view of conntrack) against the real kernel.

`build/test/ct-probe` (test/kernel/ct_probe.cpp) opens the watcher in the `hv` netns and
prints what it sees; the scenario makes conntrack entries with the `conntrack` tool in
zones 0, 1 and 2 (IPv4 and IPv6), and real NAT entries through tc `ct commit nat` with a
chunk's port range, and checks that the watcher reports exactly the zone-1 ones, with
the reply tuple that names the public address:port, on events and in dumps; that an
overrun (ENOBUFS) is reported and a dump then has everything; and the kernel's event
rule for connections created while nobody listened (nf_conntrack_events).
"""

import os
import re
import subprocess

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from labkit import CommandError

CHUNK = (4608, 5119)  # the port range a subscriber's chunk would have
PUBLIC = "198.51.100.3"
LINE = re.compile(r"^(NEW|DESTROY|ENTRY) (\S+) (\S+)->(\S+) reply (\S+)->(\S+) zone (\d+)$")


class Entry:
    """One conntrack entry: the `conntrack -I` arguments and the line ct-probe prints for it."""

    def __init__(self, proto, src, sport, dst, dport, rdst, rdport, zone):
        self.zone = zone
        v6 = ":" in src
        state = " --state ESTABLISHED -u SEEN_REPLY,ASSURED" if proto == "tcp" else " -u SEEN_REPLY"
        self.args = (f"-p {proto} -s {src} -d {dst} --sport {sport} --dport {dport} "
                     f"-r {dst} -q {rdst} --reply-port-src {dport} --reply-port-dst {rdport} -t 120{state}"
                     + (f" -w {zone}" if zone else ""))
        self.delete_args = (f"-p {proto} -s {src} -d {dst} --sport {sport} --dport {dport}"
                            + (f" -w {zone}" if zone else ""))

        def ep(a, p):
            return f"[{a}]:{p}" if v6 else f"{a}:{p}"
        self.line = f"{proto} {ep(src, sport)}->{ep(dst, dport)} reply {ep(dst, dport)}->{ep(rdst, rdport)} zone {zone}"


PRE = Entry("udp", "10.100.0.7", 40007, "203.0.113.9", 53, PUBLIC, 4777, 1)     # before any listener
PRE2 = Entry("udp", "10.100.0.8", 40008, "203.0.113.9", 53, PUBLIC, 4778, 1)    # same, nf_conntrack_events=1
Z1_UDP4 = Entry("udp", "10.100.0.2", 40000, "203.0.113.9", 53, PUBLIC, 4711, 1)
Z1_TCP4 = Entry("tcp", "10.100.0.2", 40001, "203.0.113.9", 80, PUBLIC, 4712, 1)
Z1_UDP6 = Entry("udp", "fd00:100::2", 40005, "2001:db8::9", 53, "fd00:100::2", 40005, 1)
Z2_UDP4 = Entry("udp", "10.100.0.3", 40002, "203.0.113.9", 53, "198.51.100.4", 4713, 2)
Z2_UDP6 = Entry("udp", "fd00:100::3", 40003, "2001:db8::9", 53, "fd00:100::3", 40003, 2)
Z0_UDP4 = Entry("udp", "10.100.0.4", 40004, "203.0.113.9", 53, "198.51.100.5", 4714, 0)


def conntrack(lab, args):
    return lab.sh(f"conntrack {args}", ns="hv")


class Probe:
    """ct-probe running in the hv netns; `READY` read, so its socket is subscribed."""

    def __init__(self, path, *args, stdin=False):
        self.p = subprocess.Popen(["ip", "netns", "exec", "hv", path, *map(str, args)],
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.p.stdout.readline().strip()
        if first != "READY":
            out, err = self.p.communicate(timeout=30)
            raise CommandError(f"ct-probe {' '.join(map(str, args))}: {first} {out} {err}".strip())

    def finish(self, stdin_line=None, timeout=60):
        """Wait for the probe; returns its output lines (an ERROR line fails the caller's checks)."""
        out, err = self.p.communicate(input=stdin_line, timeout=timeout)
        lines = out.splitlines()
        if self.p.returncode != 0:
            lines.append(f"ERROR exit {self.p.returncode}: {err.strip()[-300:]}")
        return lines


def run_dump(lab, probe, zone):
    r = lab.sh([probe, "dump", str(zone)], ns="hv", check=False)
    lines = r.stdout.splitlines()
    entries = [l.split(" ", 1)[1] for l in lines if l.startswith("ENTRY ")]
    ok = r.returncode == 0 and f"DUMP {len(entries)}" in lines
    return entries, ok, (r.stdout + r.stderr)[-400:]


def events(lines):
    return [l for l in lines if l.startswith(("NEW ", "DESTROY "))]


def events_and_dumps(lab, probe):
    # Made before anything listens in this netns: with nf_conntrack_events=2 (the default)
    # the kernel gives it no event extension, so it will never send its DESTROY.
    events_mode = lab.sh("cat /proc/sys/net/netfilter/nf_conntrack_events", ns="hv").stdout.strip()
    conntrack(lab, f"-I {PRE.args}")

    w = Probe(probe, "watch", 1, 60, 4)
    # Everything the watcher must not report comes before the last event it must, and
    # the kernel queues an event before the command that made it returns: so a wrong
    # report would be read before, or with, the last expected one.
    for e in (Z2_UDP4, Z2_UDP6, Z0_UDP4):
        conntrack(lab, f"-I {e.args}")
    conntrack(lab, f"-D {PRE.delete_args}")
    for e in (Z1_UDP4, Z1_TCP4, Z1_UDP6):
        conntrack(lab, f"-I {e.args}")
    conntrack(lab, f"-D {Z1_UDP4.delete_args}")
    lines = w.finish()
    got = events(lines)
    shown = " | ".join(lines)[-600:]

    lab.check("watch: NEW of a zone-1 IPv4 entry, reply tuple names the public 198.51.100.3:4711",
              f"NEW {Z1_UDP4.line}" in got, shown)
    lab.check("watch: NEW of a zone-1 TCP entry and of a zone-1 IPv6 entry",
              f"NEW {Z1_TCP4.line}" in got and f"NEW {Z1_UDP6.line}" in got, shown)
    lab.check("watch: DESTROY after conntrack -D, same tuples, after its NEW",
              f"DESTROY {Z1_UDP4.line}" in got
              and got.index(f"DESTROY {Z1_UDP4.line}") > got.index(f"NEW {Z1_UDP4.line}"), shown)
    others = [l for l in got if not l.endswith(" zone 1")]
    lab.check("watch: nothing from zone 2 (IPv4, IPv6) or zone 0, nothing else at all",
              not others and len(got) == 4 and "OVERRUN" not in lines
              and not any(l.startswith("ERROR") for l in lines), shown)
    lab.check("watch: no DESTROY for an entry made before anyone listened "
              f"(kernel rule, nf_conntrack_events={events_mode})",
              events_mode != "2" or f"DESTROY {PRE.line}" not in got, shown)

    for zone, want, what in ((1, [Z1_TCP4, Z1_UDP6], "tcp IPv4 + udp IPv6; the deleted one gone"),
                             (2, [Z2_UDP4, Z2_UDP6], "udp IPv4 + udp IPv6"), (0, [Z0_UDP4], "udp IPv4")):
        entries, ok, out = run_dump(lab, probe, zone)
        lab.check(f"dump {zone}: exactly the zone-{zone} entries ({what})",
                  ok and sorted(entries) == sorted(e.line for e in want), out)


def endpoint(text):
    addr, _, port = text.rpartition(":")
    return addr.strip("[]"), int(port)


def tc_nat(lab, probe):
    """Real NAT entries, the way the fast path will make them: tc ct commit nat with a chunk."""
    lab.add_netns("sub")
    lab.veth("hv0", "hv", "sub0", "sub")
    lab.sh_lines(["tc qdisc add dev hv0 clsact",
                  "tc filter add dev hv0 ingress protocol ip prio 1 flower "
                  f"action ct commit zone 1 nat src addr {PUBLIC} port {CHUNK[0]}-{CHUNK[1]} pipe action drop"],
                 ns="hv")
    hv_mac = lab.mac("hv", "hv0")
    w = Probe(probe, "watch", 1, 60, 2)
    base = Ether(dst=hv_mac, src="02:00:00:00:01:02") / IP(src="10.100.0.2", dst="203.0.113.9", ttl=64)
    lab.send("sub", "sub0", base / UDP(sport=41000, dport=53) / b"dpo-lab ct")
    lab.send("sub", "sub0", base / ICMP(type=8, id=777, seq=1) / b"dpo-lab ct")
    lines = w.finish()
    for line in events(lines):
        lab.note(line)
    shown = " | ".join(lines)[-600:]
    parsed = [LINE.match(l) for l in events(lines)]
    udp = [m for m in parsed if m and m.group(2) == "udp"]
    icmp = [m for m in parsed if m and m.group(2) == "icmp"]

    def translated(m, orig_src, orig_port):
        if not m:
            return False
        osrc, odst, rsrc, rdst = (endpoint(m.group(i)) for i in (3, 4, 5, 6))
        return (m.group(1) == "NEW" and m.group(7) == "1" and osrc == (orig_src, orig_port)
                and rdst[0] == PUBLIC and CHUNK[0] <= rdst[1] <= CHUNK[1] and rsrc[0] == odst[0])
    lab.check(f"tc ct nat (UDP): NEW in zone 1, reply dst = {PUBLIC}:port inside the chunk {CHUNK[0]}-{CHUNK[1]}",
              len(udp) == 1 and translated(udp[0], "10.100.0.2", 41000), shown)
    lab.check("tc ct nat (ICMP echo): NEW in zone 1, echo id 777 translated into the chunk (reply_dport)",
              len(icmp) == 1 and translated(icmp[0], "10.100.0.2", 777), shown)


def overrun(lab, probe):
    """A receive buffer at the kernel's minimum overflows after a few events: ENOBUFS."""
    w = Probe(probe, "overrun", 1, stdin=True)
    # Reply ports outside CHUNK: the tc NAT check above put a real connection from
    # 203.0.113.9:53 on a random port of CHUNK, and an inserted entry with the same
    # reply tuple would clash (conntrack -I fails, about one run in 25).
    made = [Entry("udp", f"10.100.1.{i}", 42000 + i, "203.0.113.9", 53, PUBLIC, 6800 + i, 1) for i in range(1, 21)]
    lab.sh("; ".join(f"conntrack -I {e.args} >/dev/null 2>&1 || exit 1" for e in made), ns="hv")
    lines = w.finish(stdin_line="go\n")
    shown = " | ".join(l for l in lines if not l.startswith("ENTRY"))[-400:]
    batch = next((l for l in lines if l.startswith("BATCH ")), "")
    lab.note(f"{batch} ({len(made)} entries made)")
    lab.check("overrun: 20 events into a minimal receive buffer -> process() reports overrun (ENOBUFS)",
              "overrun=1" in batch, shown)
    dumped = {l.split(" ", 1)[1] for l in lines if l.startswith("ENTRY ")}
    missing = [e.line for e in made if e.line not in dumped]
    lab.check("overrun: the dump that follows lists all 20 entries",
              not missing and not any(l.startswith("ERROR") for l in lines), f"missing {missing[:3]}; {shown}")


def events_mode_1(lab, probe):
    """nf_conntrack_events=1: every connection gets the event extension, listener or not."""
    lab.sysctl("hv", "net.netfilter.nf_conntrack_events", 1)
    conntrack(lab, f"-I {PRE2.args}")  # no probe runs now: nobody listens
    w = Probe(probe, "watch", 1, 60, 1)
    conntrack(lab, f"-D {PRE2.delete_args}")
    lines = w.finish()
    lab.check("nf_conntrack_events=1: DESTROY of an entry made while nobody listened is seen",
              f"DESTROY {PRE2.line}" in events(lines), " | ".join(lines)[-400:])


def run(lab):
    probe = os.path.join(lab.build_dir, "test", "ct-probe")
    if not lab.check("ct-probe built (--build-dir)", os.access(probe, os.X_OK), f"no executable {probe}"):
        return
    lab.add_netns("hv")
    events_and_dumps(lab, probe)
    tc_nat(lab, probe)
    overrun(lab, probe)
    events_mode_1(lab, probe)

# SPDX-License-Identifier: GPL-2.0-or-later
"""What a hostile network or file can send a running daemon, and that it stays responsive.

1. A flood of first packets: new connections from thousands of sources (spoofed, or a
   scan from inside) all miss a subscriber rule and would each be punted to the daemon.
   The punt rule's police action bounds that in the kernel (`nat.first_packet_rate` a
   second per ingress device, the rest dropped and counted); the daemon bounds what it
   holds and what it logs. While the flood runs a route change still becomes its rule, an
   established NAT flow still goes both ways by tc.
2. A reload of a hostile mapping file (4 MB, 65,000 interfaces, every one a duplicate):
   it is read on a thread of its own, so a route change made while it is being read is
   served first, and then the file is refused with its problems counted, not listed.

The topology and mapping are nat_vlan's (VLANs 100/101 inner, 200 outer, kernel
forwarding off), with `first_packet_rate` set low so that the bound is visible.
"""

import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nat_vlan as nv  # noqa: E402  the topology, frames and helpers

RATE = 100                 # first_packet_rate in the mapping (burst: a tenth of it)
BURST = RATE // 10
FLOOD_MAX_S = 60.0         # the flood runs while the checks during it do, at most this long
FLOOD_PPS = 600            # its pace: six times the police rate, and what the emulated guest
                           # forwards without its own backlog dropping (faster, TCG drops
                           # frames before tc sees them, the established flow's among them)
SOURCES = 4000             # distinct spoofed sources on VLAN 100 (10.100.16.0 and up)
ROUTE = "192.0.2.0/24"     # a route added while the flood runs
RULE_TIMEOUT = 10.0        # that route's rule, installed (a bound, not a measurement: the time is reported)
REFUSAL_LINES_PER_S = 10   # the daemon's own bound on nat-refused lines (nat_runtime.hpp)


def mapping():
    return nv.MAPPING.replace('"chunk_idle_seconds": 5 }',
                              f'"chunk_idle_seconds": 5, "first_packet_rate": {RATE} }}')


def flood_frames():
    out = []
    for i in range(SOURCES):
        src = f"10.100.{16 + i // 250}.{1 + i % 250}"
        out.append(bytes(Ether(src="02:00:00:00:10:01", dst=nv.VLAN_MAC[100]) / Dot1Q(vlan=100)
                         / IP(src=src, dst=nv.REMOTE, ttl=64) / UDP(sport=30000 + i % 20000, dport=53)
                         / b"dpo-flood"))
    return out


class Flood(threading.Thread):
    """Sends the frames round and round from fab0 at about FLOOD_PPS until stopped."""

    def __init__(self, lab, frames, seconds):
        super().__init__(daemon=True)
        self.lab, self.frames, self.seconds = lab, frames, seconds
        self.sent = 0
        self.elapsed = 0.0
        self.stopped = threading.Event()

    def stop(self):
        self.stopped.set()
        self.join(30)

    def run(self):
        with self.lab.netns("fabric"):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind(("fab0", 0))
            t0 = time.monotonic()
            while time.monotonic() - t0 < self.seconds and not self.stopped.is_set():
                ahead = self.sent - FLOOD_PPS * (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead / FLOOD_PPS)  # the pace of the flood, not of a check
                for f in self.frames[self.sent % len(self.frames):][:20]:
                    try:
                        s.send(f)
                    except OSError:  # the socket's buffer full: the wire is the bound here
                        time.sleep(0.001)
                        continue
                    self.sent += 1
            self.elapsed = time.monotonic() - t0
        finally:
            s.close()


def police_stats(lab):
    """(packets that met it, packets it dropped) of the punt rule's police action on p0, or None
    (an action's "Sent" counts every packet that ran it, dropped or not)."""
    out = nv.tc_text(lab)
    blocks = re.split(r"\n(?=filter )", out)
    for b in blocks:
        if "police" not in b or "mirred" not in b:
            continue
        m = re.search(r"police.*?Sent \d+ bytes (\d+) pkt \(dropped (\d+)", b, re.S)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def route_rule_present(lab):
    return any(r.keys.get("dst_ip") == ROUTE for r in nv.tc_rules(lab))


def diagnose(lab, d):
    """Notes for a failed flow check: the subscriber's conntrack entries, rules and chunk lines."""
    ct = lab.sh(["conntrack", "-L", "-w", str(nv.ZONE), "-s", nv.SUB_A], ns="hv", check=False)
    lab.note(f"diagnosis: conntrack zone {nv.ZONE} of {nv.SUB_A}: {ct.stdout.strip()[:600] or ct.stderr.strip()[:200]}")
    lab.note(f"diagnosis: rules of {nv.SUB_A}: " + "; ".join(r.summary() for r in nv.sub_rules(nv.tc_rules(lab), nv.SUB_A)))
    mine = [l.strip() for l in d.lines() if nv.SUB_A in l][-6:]
    lab.note(f"diagnosis: daemon lines naming {nv.SUB_A}: {' | '.join(mine)}")


def check_hostile_reload(lab, d, config):
    valid = open(config).read()
    hostile = ('{"uplink": "p0", "interfaces": [' +
               ",".join(['{"name": "x", "netdev": "p0.5", "role": "inner", "vlan": 5}'] * 65000) + "]}")
    with open(config, "w") as f:
        f.write(hostile)
    route = "198.18.0.0/24"
    since = len(d.lines())
    d.proc.send_signal(signal.SIGHUP)
    lab.sh(f"ip route add {route} via 10.200.0.254 dev p0.200", ns="hv")
    t0 = time.monotonic()
    refused, line, i_refused = d.wait_event("reload-refused", lambda f: True, 60.0, since)
    t_refused = time.monotonic() - t0
    recs = [(i, l) for i, l in enumerate(d.lines()) if i >= since and nv.parse_log_line(l)[0] == "reconciled"]
    i_route = recs[0][0] if recs else None
    has_rule = any(r.keys.get("dst_ip") == route for r in nv.tc_rules(lab))
    lab.check(f"a hostile reload ({len(hostile) >> 10} KiB, 65,000 duplicate interfaces) does not stall the loop: "
              f"the route added after the SIGHUP was reconciled before the file was refused "
              f"(refused after {t_refused:.1f} s)",
              refused is not None and i_route is not None and i_route < i_refused and has_rule,
              f"reconciled at line {i_route}, reload-refused at line {i_refused}: {line}; rule present: {has_rule}")
    problems = d.events("config-problem", since)
    more = [p for p in problems if p.get("reason", "").endswith("more problems: not shown")]
    lab.check(f"...and its problems are told up to a bound ({len(problems)} lines, the last "
              f"'{more[0]['reason'] if more else '?'}')", len(problems) <= 101 and len(more) == 1,
              f"{len(problems)} config-problem lines")
    with open(config, "w") as f:
        f.write(valid)
    since = len(d.lines())
    d.proc.send_signal(signal.SIGHUP)
    fields, line, _i = d.wait_event("reloaded", lambda f: True, 30.0, since)
    lab.check("the valid file reloads after it", fields is not None, line)
    lab.sh(f"ip route del {route} via 10.200.0.254 dev p0.200", ns="hv")


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    nv.setup(lab)
    fd, config = tempfile.mkstemp(prefix="hostile_input-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(mapping())
    run = nv.Run(lab, config)
    try:
        run.daemon, rec = nv.start(lab, config, "flood")
        run.daemons.append(run.daemon)
        if rec is None:
            return
        d = run.daemon
        # Built before the flow below is established: 4,000 frames take scapy tens of
        # seconds under TCG, long enough for an idle UDP flow to expire.
        frames = flood_frames()
        punt_rule = [r for r in nv.tc_rules(lab) if "police" in r.block]
        lab.check(f"the punt rule carries the police action (pkts_rate {RATE} pkts_burst {BURST}, "
                  "conform pipe, exceed drop)",
                  len(punt_rule) == 1 and f"pkts_rate {RATE}" in punt_rule[0].block
                  and f"pkts_burst {BURST}" in punt_rule[0].block,
                  "; ".join(r.block for r in punt_rule) or nv.tc_text(lab)[-800:])

        # An established flow before the flood: first packet, then its reply.
        payload = b"dpo-flood established"
        got, _delay, others = nv.send_get(lab, nv.inner_udp(nv.SUB_A, 40000, nv.REMOTE, 53, payload),
                                          nv.has_payload(payload), timeout=nv.FIRST_TIMEOUT)
        if not lab.check(f"a flow of {nv.SUB_A} is established before the flood (first packet out)",
                         got is not None, others):
            return
        public, pport = got[IP].src, got[UDP].sport
        reply = b"dpo-flood reply before"
        back, _d, others = nv.send_get(lab, nv.outer_udp(nv.REMOTE, 53, public, pport, reply), nv.has_payload(reply))
        lab.check(f"...and its reply comes back ({public}:{pport} -> {nv.SUB_A}:40000)", back is not None, others)

        p0 = police_stats(lab) or (0, 0)
        punted0 = nv.punt_count(lab) or 0
        lines0 = len(d.lines())
        flood = Flood(lab, frames, FLOOD_MAX_S)
        t_flood = time.monotonic()
        flood.start()

        # While it runs: a route change becomes its rule, the established flow goes both ways.
        time.sleep(0.5)  # (not pacing a check: lets the flood reach full rate before the change)
        t0 = time.monotonic()
        lab.sh(f"ip route add {ROUTE} via 10.200.0.254 dev p0.200", ns="hv")
        present = False
        while time.monotonic() - t0 < RULE_TIMEOUT and not present:
            present = route_rule_present(lab)
        took = time.monotonic() - t0
        during = flood.is_alive()
        lab.check(f"during the flood a route added ({ROUTE}) has its rule within {RULE_TIMEOUT:.0f} s "
                  f"({took:.2f} s, flood still running: {during})", present and during,
                  f"no rule for {ROUTE}; {d.tail()}")
        ok, bad, tries = 0, [], 0
        for i in range(3):
            # A frame of ours may wait behind the flood in the guest's backlog: a second
            # try of the same round trip is allowed, a lost flow is not.
            for attempt in range(2):
                tries += 1
                p = f"dpo-flood established {i}.{attempt}".encode()
                out, _dl, others = nv.send_get(lab, nv.inner_udp(nv.SUB_A, 40000, nv.REMOTE, 53, p),
                                               nv.has_payload(p), timeout=2.5)
                r = f"dpo-flood reply {i}.{attempt}".encode()
                back, _dl2, others2 = nv.send_get(lab, nv.outer_udp(nv.REMOTE, 53, public, pport, r),
                                                  nv.has_payload(r), timeout=2.5)
                if out is not None and back is not None:
                    ok += 1
                    break
                bad.append(f"{i}.{attempt}: out {'ok' if out is not None else others}, back "
                           f"{'ok' if back is not None else others2}")
        during = flood.is_alive()
        lab.check(f"during the flood the established flow goes out and back by tc ({ok} of 3 round trips in "
                  f"{tries} tries, flood still running: {during})", ok == 3, "; ".join(bad))
        if ok < 3:
            diagnose(lab, d)
        flood.stop()
        elapsed = time.monotonic() - t_flood

        # What the kernel let through to the daemon, and what it dropped.
        p1 = police_stats(lab) or (0, 0)
        punted = (nv.punt_count(lab) or 0) - punted0
        hit, dropped = p1[0] - p0[0], p1[1] - p0[1]
        bound = RATE * flood.elapsed + BURST
        lab.note(f"flood: {flood.sent} frames from {SOURCES} sources in {flood.elapsed:.1f} s "
                 f"({flood.sent / max(flood.elapsed, 0.001):.0f} frames/s); police met {hit}, dropped {dropped}; "
                 f"punted to the daemon {punted} (bound {bound:.0f} over the flood's {flood.elapsed:.1f} s)")
        # The bound over the flood's own time, with room for the checks' few first packets
        # and the last frames in the guest's backlog when the flood stopped.
        lab.check(f"the police action bounds the punt: {punted} of {flood.sent} frames reached the daemon "
                  f"(at most {RATE}/s x {flood.elapsed:.1f} s + {BURST}), the rest dropped and counted ({dropped})",
                  flood.sent > 3 * bound and punted <= bound * 1.1 + 20 and dropped > 0
                  and hit >= flood.sent * 0.9,
                  f"sent {flood.sent}, punted {punted}, police met {hit} dropped {dropped}")

        lines = d.lines()[lines0:]
        refused = sum(1 for l in lines if nv.parse_log_line(l)[0] == "nat-refused")
        summaries = [f for f in d.events("nat-refused-suppressed", lines0)]
        malformed = d.events("malformed-input", lines0)
        secs = elapsed + 2
        lab.check(f"the daemon's log stays bounded: {refused} nat-refused lines in {elapsed:.0f} s "
                  f"(at most {REFUSAL_LINES_PER_S} a second), the rest counted in "
                  f"{len(summaries)} nat-refused-suppressed lines; {len(lines)} lines in all",
                  refused <= REFUSAL_LINES_PER_S * (secs + 1) and len(lines) < 40 * secs and not malformed,
                  f"{malformed[:2]}")
        lab.check("the daemon is alive after the flood", d.proc.poll() is None, d.tail())
        payload = b"dpo-flood after"
        out, _dl, others = nv.send_get(lab, nv.inner_udp(nv.SUB_A, 40000, nv.REMOTE, 53, payload),
                                       nv.has_payload(payload))
        lab.check("after the flood the established flow still goes out by tc", out is not None, others)
        if out is None:
            diagnose(lab, d)
        lab.sh(f"ip route del {ROUTE} via 10.200.0.254 dev p0.200", ns="hv")
        check_hostile_reload(lab, d, config)
    finally:
        for dd in run.daemons:
            dd.kill()
        os.unlink(config)

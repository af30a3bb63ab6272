# SPDX-License-Identifier: GPL-2.0-or-later
"""Scale: what an event costs the daemon when the tables are big, on the real kernel.

- Cold start with 10k and 50k routes (VLAN mapping): the time from the daemon's start to its
  first `reconciled` line (every rule answered by the kernel) against `tc -batch` of the same
  rules (its own --dry-run) on the same kernel, side by side in one run.
- With NAT, at 10 and then 10,000 routes: a new subscriber's first packet against a packet
  that is not punted (it must not grow with the table); one route change (its messages, no
  dump); a burst of 10,000 route changes (no overrun at the default buffers, converged after,
  first packets sent while the daemon works through it served between slices, each within
  50 ms). Packet delays are the kernel's own timestamps of the frame leaving and the answer
  arriving on fab0 (SO_TIMESTAMPNS), not the interpreter's.
- The daemon's peak memory (VmHWM) and CPU (user / system) at each size, and tc's.
Numbers are printed as notes; the checks hold the daemon to what it must do, with the
margins emulation needs (TCG is slow and noisy: compare side by side, count operations).
"""

import os
import resource
import statistics

import subprocess
import tempfile
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import PACKET_OUTGOING, DaemonProcess, parse_log_line, vlans

MACS = {"p0.100": "02:dd:00:00:64:01", "p0.101": "02:dd:00:00:65:01", "p0.200": "02:dd:00:00:c8:01"}
GW = ("10.200.0.254", "02:00:00:00:c8:fe")       # transit's gateway
GW2 = ("10.200.0.253", "02:00:00:00:c8:fd")      # another one
RED = ("10.101.0.2", "02:00:00:00:02:02")        # a router on red
REMOTE = "203.0.113.9"

MAPPING = """{{"uplink": "p0", "interfaces": [
 {{"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100}},
 {{"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101}},
 {{"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}}]{nat}}}"""
NAT = """, "nat": {"zone": 1, "pool": ["198.51.100.0/24"], "ports": {"first": 1024, "last": 65535},
 "chunk_size": 1024, "max_chunks_per_subscriber": 2, "chunk_idle_seconds": 600}"""

COLD = (10000, 50000)      # routes for the cold starts
NAT_ROUTES = 10000
BURST = 10000              # route changes in the burst
BURST_SAMPLES = 3          # first packets sent while it is worked through
BURST_FIRST_LIMIT = 0.050  # seconds from a first packet leaving fab0 to its translation back on fab0
RATIO = 0.6                # the daemon's cold start against tc -batch of the same rules
FIRST_SAMPLES = 5


def route_lines(n, start=0, verb="add"):
    """n /24 routes in 100.0.0.0/8, a third via transit's gateway, the rest via red."""
    out = []
    for i in range(start, start + n):
        gw = GW[0] if i % 3 == 0 else RED[0]
        dev = "p0.200" if i % 3 == 0 else "p0.101"
        out.append(f"route {verb} 100.{i >> 8 & 255}.{i & 255}.0/24 via {gw} dev {dev}")
    return out


def ip_batch(lab, lines, ns="hv"):
    fd, path = tempfile.mkstemp(prefix="scale-ip-", suffix=".batch")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        t0 = time.monotonic()
        lab.sh(["ip", "-n", ns, "-batch", path], timeout=600)
        return time.monotonic() - t0
    finally:
        os.unlink(path)


def hypervisor(lab, ns, fabric=None):
    """The uplink p0 with VLANs 100, 101, 200 in `ns`; its peer in `fabric` (or in `ns`)."""
    lab.add_netns(ns)
    if fabric:
        lab.add_netns(fabric)
        lab.veth("p0", ns, "fab0", fabric)
        lab.sysctl(fabric, "net.ipv6.conf.fab0.disable_ipv6", 1)
    else:
        lab.veth("p0", ns, "peer0", ns)
    lab.vlan_device(ns, "p0", 100, "10.100.0.1/16", "fd00:100::1/64", [], mac=MACS["p0.100"])
    lab.vlan_device(ns, "p0", 101, "10.101.0.1/24", "fd00:101::1/64", [RED], mac=MACS["p0.101"])
    lab.vlan_device(ns, "p0", 200, "10.200.0.1/24", "fd00:200::1/64", [GW, GW2], mac=MACS["p0.200"])
    lab.sh_lines([f"ip route add default via {GW[0]} dev p0.200"], ns=ns)
    lab.sysctl(ns, "net.ipv4.ip_forward", 0)
    lab.sysctl(ns, "net.ipv6.conf.all.forwarding", 0)


def write_config(nat):
    fd, path = tempfile.mkstemp(prefix="scale-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING.format(nat=NAT if nat else ""))
    return path


def vm_hwm_mib(proc):
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def cpu_seconds(proc):
    """(user, system) CPU seconds of a running process: system is where the kernel did
    the work of its netlink requests (they run in the sender's context)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, IndexError, ValueError):
        return None


def tc_batch_seconds(lab, ns, config):
    """`tc -batch` of the daemon's own --dry-run, attached to a fresh device q0 of the same
    namespace (its rules still redirect to p0): (seconds, rules, (exit, errors))."""
    r = lab.sh(["ip", "netns", "exec", ns, lab.daemon_path(), "--dry-run", "--config", config], timeout=600)
    cmds = [l[len("tc "):].replace("filter add dev p0 ingress", "filter add dev q0 ingress", 1)
            for l in r.stdout.splitlines() if l.startswith("tc filter add ")]
    fd, path = tempfile.mkstemp(prefix="scale-tc-", suffix=".batch")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(cmds) + "\n")
    try:
        lab.sh_lines(["ip link add q0 type dummy", "ip link set q0 up", "tc qdisc add dev q0 clsact"], ns=ns)
        t0, ru0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        b = lab.sh(["tc", "-batch", path], ns=ns, check=False, timeout=1200)
        secs, ru1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime)
        return secs, len(cmds), (b.returncode, b.stderr.strip()[-300:]), cpu
    finally:
        os.unlink(path)


def check_cold_starts(lab, config):
    """A namespace per size, nothing deleted between the measurements: a mass delete keeps
    the kernel busy freeing filters for seconds, and would slow what comes next."""
    for n in COLD:
        ns = f"hv{n // 1000}k"
        hypervisor(lab, ns)
        lab.note(f"{ns}: {n} routes added with ip -batch in {ip_batch(lab, route_lines(n), ns):.1f} s")
        d = DaemonProcess(lab, ns, config, f"cold{n}")
        rec, line = d.next_event("reconciled", 600.0)
        secs = time.monotonic() - d.t_start
        hwm = vm_hwm_mib(d.proc)
        cpu = cpu_seconds(d.proc) or (0, 0)
        d.stop()
        d.kill()
        if not lab.check(f"{n} routes: the daemon starts and reconciles", rec is not None, line):
            continue
        tc_s, rules, (rc, err), tc_cpu = tc_batch_seconds(lab, ns, config)
        lab.check(f"{n} routes: tc -batch of the daemon's --dry-run ({rules} rules) is accepted", rc == 0, err)
        ratio = secs / tc_s if tc_s else float("inf")
        lab.note(f"cold start, {n} routes, {rec.get('rules')} rules: the daemon {secs:.1f} s from its start to its "
                 f"first reconciled line (its pass {int(rec.get('ms', 0)) / 1000:.1f} s); tc -batch of the same rules "
                 f"{tc_s:.1f} s: {ratio:.2f}x; CPU user/system: the daemon {cpu[0]:.1f}/{cpu[1]:.1f} s, tc "
                 f"{tc_cpu[0]:.1f}/{tc_cpu[1]:.1f} s; daemon peak memory {hwm or 0:.1f} MiB")
        lab.check(f"{n} routes: cold start in {secs:.1f} s, {ratio:.2f}x the time of tc -batch of the same "
                  f"{rules} rules ({tc_s:.1f} s), want <= {RATIO}x",
                  ratio <= RATIO and rec.get("added") == rec.get("rules") and rec.get("refused") == "0",
                  line.strip())


# ---------------------------------------------------------------- NAT: first packets

def udp(src, sport, payload, vid=100, dst=REMOTE):
    mac = f"02:00:00:00:{(sport >> 8) & 255:02x}:{sport & 255:02x}"
    return (Ether(src=mac, dst=MACS[f"p0.{vid}"]) / Dot1Q(vlan=vid) / IP(src=src, dst=dst, ttl=64)
            / UDP(sport=sport, dport=53) / payload)


def timed(lab, frame, payload, timeout=5.0):
    """(seconds from the frame leaving fab0 to its answer arriving on fab0, the answer):
    both times the kernel's (labkit's captures take SO_TIMESTAMPNS), so the interpreter's
    own pace under emulation is left out; the send call's time when the copy of the sent
    frame was not seen."""
    cap = lab.capture("fabric", "fab0", direction="both")
    try:
        t0 = time.time()
        lab.send("fabric", "fab0", frame)
        ours = lambda p: Raw in p and p[Raw].load == payload  # noqa: E731
        sent = cap.expect(lambda p: ours(p) and p.direction == PACKET_OUTGOING, timeout)
        got = cap.expect(lambda p: ours(p) and p.direction != PACKET_OUTGOING and vlans(p) == [200], timeout)
        start = sent.time if sent is not None else t0
        return (got.time - start) if got is not None else None, got
    finally:
        cap.close()


class Subscribers:
    """New subscribers, one per first packet: 10.100.x.y."""

    def __init__(self):
        self.next = 10

    def take(self):
        self.next += 1
        return f"10.100.{self.next >> 8}.{self.next & 255}"


def first_packets(lab, subs, tag):
    """(median first-packet delay, median later-packet delay, details) over FIRST_SAMPLES subscribers."""
    firsts, laters, bad = [], [], []
    for i in range(FIRST_SAMPLES):
        sub = subs.take()
        payload = f"scale {tag} first {i}".encode()
        d1, got = timed(lab, udp(sub, 40000 + i, payload), payload)
        if d1 is None:
            bad.append(f"{sub}: first packet not seen")
            continue
        if not got[IP].src.startswith("198.51.100."):
            bad.append(f"{sub}: not translated ({got[IP].src})")
        firsts.append(d1)
        payload2 = f"scale {tag} later {i}".encode()
        d2, _ = timed(lab, udp(sub, 40000 + i, payload2), payload2)
        if d2 is None:
            bad.append(f"{sub}: second packet not seen")
            continue
        laters.append(d2)
    if not firsts or not laters:
        return None, None, bad
    return statistics.median(firsts), statistics.median(laters), bad


def settle(d, since, timeout):
    """After line `since`: the last reconciled line with nothing queued, once a second
    passes without another."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        fields, _line, i = d.wait_event("reconciled", lambda f: True, 1.0, since)
        if fields is None:
            if last is not None and last.get("queued") == "0":
                return last
            continue
        since = i + 1
        last = fields
    return last


def check_nat(lab, config):
    hypervisor(lab, "hv", "fabric")
    subs = Subscribers()
    d = DaemonProcess(lab, "hv", config, "nat")
    try:
        rec, why = d.next_event("reconciled", 60.0)
        if not lab.check("nat: the daemon starts with few routes and reconciles", rec is not None, why):
            return
        d.wait_event("nat-running", lambda f: True, 10.0)
        f10, l10, bad = first_packets(lab, subs, "10 routes")
        lab.check(f"nat, ~10 routes: first packets of {FIRST_SAMPLES} new subscribers translated "
                  f"(median {f10 * 1000:.0f} ms; a later packet of the same flow {l10 * 1000:.0f} ms)"
                  if f10 else "nat, ~10 routes: first packets translated", f10 is not None and not bad, "; ".join(bad))

        since = len(d.lines())
        t_add = ip_batch(lab, route_lines(NAT_ROUTES))
        conv = settle(d, since, 300.0)
        lab.note(f"nat: {NAT_ROUTES} routes added in {t_add:.1f} s; the daemon converged: "
                 f"{' '.join(f'{k}={v}' for k, v in (conv or {}).items())}")

        # One route change at 10k routes: what it sends, and no dump.
        d.skip_to_now()
        lab.sh(["ip", "route", "add", "172.31.0.0/24", "via", GW[0], "dev", "p0.200"], ns="hv")
        one, line = d.next_event("reconciled", 10.0, lambda f: f.get("added") not in (None, "0"))
        lab.check(f"nat, {NAT_ROUTES} routes: one route add costs a few messages and no dump ({line.strip()})",
                  one is not None and int(one.get("messages", 99)) <= 4 and one.get("dumps") == "0"
                  and int(one.get("keys", 99)) <= 4, line)

        f10k, l10k, bad = first_packets(lab, subs, f"{NAT_ROUTES} routes")
        ok = f10 and f10k and (f10k - l10k) <= 1.5 * (f10 - l10) + 0.030
        lab.check(f"nat, {NAT_ROUTES} routes: a first packet takes {f10k * 1000:.0f} ms against {l10k * 1000:.0f} ms "
                  f"for a packet that is not punted (at ~10 routes: {f10 * 1000:.0f} against {l10 * 1000:.0f} ms): "
                  "it does not grow with the table" if f10k and f10 else f"nat, {NAT_ROUTES} routes: first packets",
                  bool(ok) and not bad, "; ".join(bad) or "grew")

        # A burst of route changes (each route to the other gateway), and a first packet in it.
        lines = [l.replace(RED[0] + " dev p0.101", GW2[0] + " dev p0.200") if f" {RED[0]} " in l
                 else l.replace(GW[0], GW2[0]) for l in route_lines(BURST, 0, "replace")]
        fd, path = tempfile.mkstemp(prefix="scale-burst-", suffix=".batch")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        since = len(d.lines())
        proc = subprocess.Popen(["ip", "-n", "hv", "-batch", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        t_burst = time.monotonic()
        # Once the daemon works on the burst (its first pass after it), a first packet.
        started, _l, _i = d.wait_event("reconciled", lambda f: f.get("lane") == "bulk", 30.0, since)
        t_work = time.monotonic()
        # First packets of new subscribers, one after the other while the burst is worked
        # through: each is re-injected once its rule is in, between two slices of the burst.
        delays = []
        for i in range(BURST_SAMPLES):
            payload = f"scale first in the burst {i}".encode()
            delay, got = timed(lab, udp(subs.take(), 41000 + i, payload), payload)
            delays.append(delay)
        proc.wait(timeout=600)
        os.unlink(path)
        t_done = time.monotonic()
        conv = settle(d, since, 300.0)
        resyncs = d.events("resync", since)
        shown = ", ".join("lost" if d is None else f"{d * 1000:.0f}" for d in delays)
        lab.note(f"burst: {BURST} route changes written in {t_done - t_burst:.1f} s; the daemon's first pass after "
                 f"{t_work - t_burst:.2f} s; first packets sent from then on came out after {shown} ms")
        lab.check(f"burst of {BURST} route changes: no netlink overrun at the default buffers, converged "
                  f"({' '.join(f'{k}={v}' for k, v in (conv or {}).items() if k in ('rules', 'queued', 'ms'))})",
                  started is not None and not resyncs and conv is not None and conv.get("queued") == "0",
                  f"resyncs {resyncs[:2]}; last {conv}")
        worst = None if None in delays else max(delays)
        lab.check(f"burst: first packets sent while the daemon works through it are served between slices, "
                  f"within {BURST_FIRST_LIMIT * 1000:.0f} ms ({shown} ms; idle {f10k * 1000:.0f} ms)"
                  if f10k else "burst: first packets sent in it are served",
                  worst is not None and worst <= BURST_FIRST_LIMIT,
                  f"{shown} ms, want each <= {BURST_FIRST_LIMIT * 1000:.0f} ms")
        # Converged means forwarding: a changed route now leaves via the other gateway.
        payload = b"scale after the burst"
        cap = lab.capture("fabric", "fab0")
        try:
            lab.send("fabric", "fab0", udp("10.101.0.9", 42000, payload, vid=101, dst="100.0.1.7"))
            out = cap.expect(lambda p: Raw in p and p[Raw].load == payload, 5.0)
        finally:
            cap.close()
        lab.check("after the burst a changed route forwards via its new gateway (vlan 200, its mac)",
                  out is not None and vlans(out) == [200] and out.dst == GW2[1],
                  f"got {out.summary() if out is not None else None}")
        hwm = vm_hwm_mib(d.proc)
        if hwm:
            lab.note(f"nat daemon peak memory at {NAT_ROUTES} routes after the burst: {hwm:.1f} MiB")
    finally:
        d.stop()
        d.kill()


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None, "no agent/dpoffloadd"):
        return
    plain, nat = write_config(False), write_config(True)
    try:
        check_cold_starts(lab, plain)
        check_nat(lab, nat)
    finally:
        os.unlink(plain)
        os.unlink(nat)

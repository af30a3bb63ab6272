# SPDX-License-Identifier: GPL-2.0-or-later
"""What the daemon tells systemd (Type=notify), heard on a notify socket the test owns.

    fabric netns                      hv netns: dpoffloadd (the build tree's), with
    fab0  <------------ veth ------------>  p0     NOTIFY_SOCKET=<a datagram socket of this test>
                                            +- p0.100  blue     inner     WATCHDOG_USEC=2000000
                                            +- p0.101  red      inner     WATCHDOG_PID=<its pid>
                                            +- p0.200  transit  outer (NAT), ROUTES routes via its gateway

Checks: READY=1 comes only once the start pass has put the rules in (tc, read the moment
READY=1 is read, shows as many rules as when the daemon has settled); STATUS= is the
one-line summary, at most one a second while routes change; WATCHDOG=1 at least every
WATCHDOG_USEC/2 while the daemon is idle (its poll must wake for it); SIGHUP with a valid
file: RELOADING=1 (with MONOTONIC_USEC) then READY=1 saying "reloaded"; with an invalid
file: RELOADING=1 then READY=1 saying "reload refused: 1 problem, running configuration
kept"; SIGTERM: STOPPING=1. Every message comes from the daemon's own pid (what
NotifyAccess=main accepts).

The unit as shipped, under real systemd, is package_upgrade's.
"""

import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from labkit import DaemonProcess

ROUTES = 10000                 # a READY=1 sent before the start pass would be seen; its time is TimeoutStartSec='s basis
WATCHDOG_USEC = 2_000_000
WATCH_WINDOW = 6.0             # seconds of idle daemon over which the pings are timed
START_TIMEOUT = 60.0
STATUS_RE = re.compile(r"^rules (\d+) \(in_hw (\d+), not_in_hw (\d+), refused (\d+)\); routes (\d+)"
                       r"; NAT (\d+) subscribers; last audit \d\d:\d\d:\d\dZ drift (\d+)")

MAPPING = """{
  "uplink": "p0",
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100", "role": "inner", "vlan": %d },
    { "name": "red",     "netdev": "p0.101", "role": "inner", "vlan": 101 },
    { "name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200 }
  ],
  "nat": { "zone": 1, "pool": ["198.51.100.0/30"] }
}
"""


class NotifySocket:
    """An AF_UNIX datagram socket (the service manager's end), read on a thread of its own
    so that each message is timed when it arrives: its arrival time and its sender's pid
    (SCM_CREDENTIALS, as systemd reads it). on_message(fields) runs on that thread as each
    arrives, before the next is read."""

    def __init__(self, on_message=None):
        self.dir = tempfile.mkdtemp(prefix="dpo-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []   # (monotonic time, pid, {field: value}, raw text)
        self.read_upto = 0
        self.on_message = on_message
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self):
        while not self.done:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS and len(cdata) >= 12:
                    pid, _uid, _gid = struct.unpack("iII", cdata[:12])
            text = data.decode("utf-8", "replace")
            fields = dict(l.split("=", 1) for l in text.splitlines() if "=" in l)
            if self.on_message:
                self.on_message(fields)
            with self.cond:
                self.messages.append((t, pid, fields, text))
                self.cond.notify_all()

    def next(self, pred, timeout):
        """The next message not yet consumed with pred(fields) as (time, pid, fields, text),
        or None. Messages before it are consumed too."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.read_upto < len(self.messages):
                    m = self.messages[self.read_upto]
                    self.read_upto += 1
                    if pred(m[2]):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def window(self, seconds):
        """Everything that arrives within `seconds` from now (a bounded window, by design)."""
        with self.cond:
            mark = len(self.messages)
        deadline = time.monotonic() + seconds
        with self.cond:
            while time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            return self.messages[mark:]

    def count(self):
        with self.cond:
            return len(self.messages)

    def since(self, index):
        with self.cond:
            return self.messages[index:]

    def close(self):
        self.done = True
        self.thread.join()
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


class NotifiedDaemon(DaemonProcess):
    """dpoffloadd with systemd's environment. WATCHDOG_PID must be the daemon's pid:
    `sh` exports its own ($$) and execs `ip netns exec`, which execs the daemon, so the
    pid stays the same."""

    def __init__(self, lab, ns, config, tag, notify_path):
        self.lab, self.ns, self.tag = lab, ns, tag
        fd, self.log_path = tempfile.mkstemp(prefix=f"dpoffloadd-{tag}-", suffix=".log")
        self.log = os.fdopen(fd, "w")
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            ["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh",
             "ip", "netns", "exec", ns, lab.daemon_path(), "--config", config],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env)
        self.t_start = time.monotonic()
        self.read_upto = 0


def tc_rule_count(ns="hv", dev="p0"):
    r = subprocess.run(["ip", "netns", "exec", ns, "tc", "filter", "show", "dev", dev, "ingress"],
                       capture_output=True, text=True, timeout=60)
    return sum(1 for l in r.stdout.splitlines() if l.startswith("filter ") and " handle " in l)


def setup_network(lab):
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    lab.vlan_device("hv", "p0", 100, "10.100.0.1/24", "fd00:100::1/64", [("10.100.0.2", "02:00:00:00:01:02")])
    lab.vlan_device("hv", "p0", 101, "10.101.0.1/24", "fd00:101::1/64", [("10.101.0.2", "02:00:00:00:02:02")])
    lab.vlan_device("hv", "p0", 200, "10.200.0.1/24", "fd00:200::1/64", [("10.200.0.254", "02:00:00:00:c8:fe")])
    batch = os.path.join(tempfile.mkdtemp(prefix="dpo-routes-"), "routes")
    with open(batch, "w") as f:
        for i in range(ROUTES):
            f.write(f"route add 100.{i // 256 % 256}.{i % 256}.0/24 via 10.200.0.254\n")
    lab.sh(["ip", "-n", "hv", "-batch", batch])
    os.unlink(batch)
    os.rmdir(os.path.dirname(batch))


def write(path, text):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None, "no agent/dpoffloadd"):
        return
    setup_network(lab)
    fd, config = tempfile.mkstemp(prefix="systemd_notify-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING % 100)
    at_ready = {}

    def on_message(fields):
        # The moment READY=1 arrives, before anything else is read: are the rules in?
        if fields.get("READY") == "1" and "count" not in at_ready:
            at_ready["count"] = tc_rule_count()

    ns = NotifySocket(on_message)
    d = NotifiedDaemon(lab, "hv", config, "notify", ns.path)
    try:
        scenario(lab, d, ns, config, at_ready)
    finally:
        d.stop()
        d.kill()
        ns.close()
        os.unlink(config)


def scenario(lab, d, ns, config, at_ready):
    pid = d.proc.pid
    t0 = time.monotonic()
    ready = ns.next(lambda f: f.get("READY") == "1", START_TIMEOUT)
    if not lab.check("READY=1 arrives after the start", ready is not None,
                     f"none within {START_TIMEOUT:.0f} s; messages {[m[3] for m in ns.messages][:5]}; "
                     f"log: {d.tail()}"):
        return
    rec, line = d.next_event("reconciled", 30, lambda f: f.get("lane") == "start")
    lab.note(f"READY=1 {ready[0] - t0:.1f} s after the start ({ROUTES} routes, {rec.get('rules') if rec else '?'} "
             f"rules, start pass {rec.get('ms') if rec else '?'} ms); first messages: "
             f"{[m[3].replace(chr(10), ' ') for m in ns.messages[:3]]}")
    settled = tc_rule_count()
    lab.check(f"READY=1 only once the rules are in: tc showed {at_ready.get('count')} rules on p0 when READY=1 "
              f"was read, {settled} once settled (>= {ROUTES} for {ROUTES} routes)",
              at_ready.get("count") == settled and settled >= ROUTES, f"start pass: {line}")
    early = [m[3] for m in ns.messages[:ns.read_upto - 1] if m[2].get("READY") == "1"]
    lab.check("no READY=1 before that one", not early, f"{early}")
    status = ready[2].get("STATUS", "")
    m = STATUS_RE.match(status)
    lab.check(f"READY=1 carries STATUS= with the summary ({status})",
              m is not None and rec is not None and m.group(1) == rec.get("rules") and int(m.group(5)) >= ROUTES,
              f"STATUS {status!r}; start pass {line}")

    # -- the watchdog, while nothing happens: only the poll's timeout wakes the loop.
    t_w0 = time.monotonic()
    seen = ns.window(WATCH_WINDOW)
    t_w1 = time.monotonic()
    pings = [t for t, _p, f, _r in seen if f.get("WATCHDOG") == "1"]
    edges = [t_w0] + pings + [t_w1]
    gaps = [b - a for a, b in zip(edges, edges[1:])]
    limit = WATCHDOG_USEC / 2 / 1e6
    lab.check(f"WATCHDOG=1 at least every WATCHDOG_USEC/2 = {limit:.1f} s while idle ({len(pings)} in "
              f"{t_w1 - t_w0:.1f} s, longest gap {max(gaps):.2f} s)",
              pings and max(gaps) <= limit, f"pings at {[round(p - t_w0, 2) for p in pings]}")

    # -- STATUS= follows changes, at most once a second.
    mark = ns.count()
    t_churn = time.monotonic()
    for i in range(20):   # one command each: under emulation about 0.1 s apart, many passes
        lab.sh(f"ip route add 101.0.{i}.0/24 via 10.200.0.254", ns="hv")
    base = STATUS_RE.match(ready[2].get("STATUS", ""))
    want_routes = (int(base.group(5)) if base else ROUTES) + 20
    got = ns.next(lambda f: (m := STATUS_RE.match(f.get("STATUS", ""))) is not None and
                  int(m.group(5)) >= want_routes, 10.0)
    t_end = time.monotonic()
    statuses = [(t, f["STATUS"]) for t, _p, f, _r in ns.since(mark) if "STATUS" in f]
    lab.check(f"STATUS= follows 20 route changes (routes {want_routes - 20} -> {want_routes})", got is not None,
              f"statuses {[s for _t, s in statuses]}")
    span = t_end - t_churn
    gaps = [b - a for (a, _), (b, _) in zip(statuses, statuses[1:])]
    passes = len(d.events("reconciled"))
    lab.check(f"STATUS= at most once a second: {len(statuses)} in {span:.1f} s of changes "
              f"({passes} passes logged in all)",
              len(statuses) <= span + 1 and all(g >= 0.9 for g in gaps),
              f"at {[round(t - t_churn, 2) for t, _ in statuses]}")
    if got:
        lab.note(f"STATUS={got[2]['STATUS']}")

    # -- reload: a valid file, then an invalid one.
    write(config, MAPPING % 102)
    mark = ns.count()
    os.kill(d.proc.pid, signal.SIGHUP)
    done = ns.next(lambda f: f.get("READY") == "1", 30)
    seq = [f for _t, _p, f, _r in ns.since(mark) if "READY" in f or "RELOADING" in f]
    reloading = seq[0] if seq else {}
    mono = int(reloading.get("MONOTONIC_USEC", "0") or 0)
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lab.check("SIGHUP with a valid file: RELOADING=1 (MONOTONIC_USEC= now) then READY=1, STATUS= 'reloaded'",
              done is not None and reloading.get("RELOADING") == "1" and 0 < now_us - mono < 30_000_000 and
              "reloaded" in done[2].get("STATUS", ""),
              f"sequence {seq}")
    if done:
        lab.note(f"after a valid reload: STATUS={done[2].get('STATUS')}")
    write(config, MAPPING % 4095)
    mark = ns.count()
    os.kill(d.proc.pid, signal.SIGHUP)
    done = ns.next(lambda f: f.get("READY") == "1", 30)
    seq = [f for _t, _p, f, _r in ns.since(mark) if "READY" in f or "RELOADING" in f]
    lab.check("SIGHUP with an invalid file (VLAN 4095): RELOADING=1 then READY=1, STATUS= 'reload refused: "
              "1 problem, running configuration kept'",
              done is not None and seq and seq[0].get("RELOADING") == "1" and
              re.search(r"reload refused \S+: 1 problem, running configuration kept", done[2].get("STATUS", "")),
              f"sequence {seq}")
    if done:
        lab.note(f"after a refused reload: STATUS={done[2].get('STATUS')}")
    refused, why = d.next_event("reload-refused", 10)
    lab.check("the daemon logged reload-refused and runs on", refused is not None and d.proc.poll() is None, why)

    # -- SIGTERM
    mark = ns.count()
    rc = d.stop()
    stopping = ns.next(lambda f: f.get("STOPPING") == "1", 5)
    lab.check("SIGTERM: STOPPING=1, exit 0", stopping is not None and rc == 0,
              f"exit {rc}; messages {[r for _t, _p, _f, r in ns.since(mark)]}")

    pids = {p for _t, p, _f, _r in ns.messages}
    lab.check(f"every message ({len(ns.messages)}) came from the daemon's pid {pid} (NotifyAccess=main)",
              pids == {pid}, f"senders {pids}")


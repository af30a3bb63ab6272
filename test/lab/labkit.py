# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest-side helpers for the dpoffload lab scenarios.

Runs inside the lab guest (Debian 6.1 kernel under qemu, the host's root chrooted),
as root, under /usr/bin/python3. A scenario gets one `Lab` and uses it to build
namespaces and veths, run commands, send frames and wait for frames, and to report
checks: one line per check, `PASS <scenario>: <check>` or
`FAIL <scenario>: <check>: <why>`.

Namespaces are switched in-process (setns on /run/netns/NAME) so that one Python
process, which imported scapy once, can send and capture in every namespace.
Captures use plain AF_PACKET sockets with PACKET_AUXDATA: the kernel keeps a
received 802.1Q tag in skb metadata (veth and 8021q use VLAN offload), so the tag
is not in the bytes a raw socket reads; it is put back from the auxdata, so a
frame's Dot1Q layer and VLAN id are what was on the wire.
"""

import contextlib
import tempfile
import signal
import re
import ctypes
import json
import os
import select
import shlex
import socket
import struct
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
SO_TIMESTAMPNS = 35   # asm-generic/socket.h (SCM_TIMESTAMPNS is the same number)
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)

# Default bounds. `expect` returns as soon as its frame arrives; the timeout only
# bounds a failure. `expect_none` is a window by nature: keep it short.
EXPECT_TIMEOUT = 5.0
NONE_WINDOW = 1.0

_libc = ctypes.CDLL(None, use_errno=True)


class CommandError(RuntimeError):
    pass


def load_scapy():
    """Import the scapy layers the lab uses (slow under emulation: do it once)."""
    from scapy.layers import l2, inet, inet6, vxlan  # noqa: F401
    from scapy.config import conf
    conf.verb = 0


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Capture:
    """A raw capture on one interface of one namespace, open from creation on.

    Open it *before* sending the frame you expect, then `expect()` polls it until a
    matching frame arrives or the deadline passes."""

    def __init__(self, lab, ns, dev, direction="in"):
        self.lab, self.ns, self.dev, self.direction = lab, ns, dev, direction
        with lab.netns(ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                # The kernel's time of each frame (an outgoing one as it left, an incoming
                # one as it arrived), not the time Python got to it: latencies measured
                # from frame times leave out the interpreter, slow under emulation.
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                s.bind((dev, ETH_P_ALL))
            except OSError as e:
                s.close()
                raise CommandError(f"cannot capture on {dev} in netns {ns}: {e}") from e
        s.setblocking(False)
        self.sock = s
        self.others = []   # frames read that did not match (for failure reports)
        lab._captures.append(self)

    def _wanted_direction(self, pkttype):
        if self.direction == "in":
            return pkttype != PACKET_OUTGOING
        if self.direction == "out":
            return pkttype == PACKET_OUTGOING
        return True

    def _read(self):
        """One frame as a scapy Ether (VLAN tag restored), or None when none is queued."""
        from scapy.layers.l2 import Ether
        try:
            data, anc, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16))
        except BlockingIOError:
            return None
        pkttype = addr[2]
        if not self._wanted_direction(pkttype):
            return False
        stamp = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack("=qq", cdata[:16])
                stamp = sec + nsec / 1e9
            if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= 20:
                status, _len, _snap, _mac, _net, tci, tpid = struct.unpack("=IIIHHHH", cdata[:20])
                if status & TP_STATUS_VLAN_VALID:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        pkt = Ether(data)
        pkt.sniffed_on = self.dev
        pkt.direction = pkttype
        pkt.time = stamp if stamp is not None else time.time()
        return pkt

    def expect(self, match, timeout=EXPECT_TIMEOUT):
        """First frame for which match(pkt) is true, or None once `timeout` passed."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                pkt = self._read()
                if pkt is None:
                    break
                if pkt is False:
                    continue
                try:
                    hit = match(pkt)
                except Exception:
                    hit = False
                if hit:
                    return pkt
                self.others.append(pkt)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([self.sock], [], [], left)

    def expect_none(self, match, window=NONE_WINDOW):
        """Wait `window` seconds; return the first matching frame, or None if none came."""
        return self.expect(match, timeout=window)

    def others_summary(self, limit=4):
        if not self.others:
            return "no other frame seen"
        shown = "; ".join(describe(p) for p in self.others[-limit:])
        return f"{len(self.others)} other frame(s) seen, last: {shown}"

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
        if self in self.lab._captures:
            self.lab._captures.remove(self)


def describe(pkt):
    """One line naming the fields a lab check looks at."""
    from scapy.layers.l2 import Dot1Q
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    parts = [f"{pkt.src}>{pkt.dst}"]
    p = pkt
    while Dot1Q in p:
        parts.append(f"vlan {p[Dot1Q].vlan}")
        p = p[Dot1Q].payload
    if IP in pkt:
        parts.append(f"{pkt[IP].src}>{pkt[IP].dst} ttl {pkt[IP].ttl} proto {pkt[IP].proto}")
    elif IPv6 in pkt:
        parts.append(f"{pkt[IPv6].src}>{pkt[IPv6].dst} hlim {pkt[IPv6].hlim} nh {pkt[IPv6].nh}")
    else:
        parts.append(pkt.lastlayer().name)
    return " ".join(parts)


def payload_is(data):
    """A capture filter: the frame carries exactly this payload."""
    from scapy.packet import Raw
    return lambda p: Raw in p and p[Raw].load == data


def ipv4_checksum_ok(pkt):
    """Whether the frame's IPv4 header checksum is right (a rewrite must fix it)."""
    from scapy.layers.inet import IP
    ip = pkt[IP].copy()
    ip.remove_payload()
    want = ip.chksum
    ip.chksum = None
    return IP(bytes(ip)).chksum == want


def vlans(pkt):
    """The VLAN ids of a frame, outermost first."""
    from scapy.layers.l2 import Dot1Q
    out, p = [], pkt
    while Dot1Q in p:
        out.append(p[Dot1Q].vlan)
        p = p[Dot1Q].payload
    return out


class Lab:
    """What a scenario's run(lab) gets."""

    def __init__(self, scenario, build_dir=None, source_root=None, out=None):
        self.scenario = scenario
        self.build_dir = build_dir
        self.source_root = source_root
        self.out = out or sys.stdout
        self.passed = 0
        self.failed = 0
        self.namespaces = []
        self._captures = []

    # ------------------------------------------------------------ reporting
    def check(self, name, ok, detail=""):
        """Report one check: one line. Returns `ok` so callers can branch on it."""
        if ok:
            self.passed += 1
            print(f"PASS {self.scenario}: {name}", file=self.out, flush=True)
        else:
            self.failed += 1
            why = " ".join(str(detail or "failed").split())
            print(f"FAIL {self.scenario}: {name}: {why}", file=self.out, flush=True)
        return bool(ok)

    def note(self, msg):
        """Informational line (not a check)."""
        print(f"  # {msg}", file=self.out, flush=True)

    # ------------------------------------------------------------ commands
    def sh(self, cmd, ns=None, check=True, timeout=60, input=None):
        """Run a shell command (in netns `ns`). Raises CommandError naming the command
        and its stderr if it fails and `check`. Returns the CompletedProcess (text)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if ns:
            argv = ["ip", "netns", "exec", ns] + argv
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        except subprocess.TimeoutExpired as e:
            raise CommandError(f"command timed out after {timeout} s{' in netns ' + ns if ns else ''}: "
                               f"{cmd if isinstance(cmd, str) else shlex.join(cmd)}") from e
        if check and r.returncode != 0:
            shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
            raise CommandError(f"command failed (exit {r.returncode})"
                               f"{' in netns ' + ns if ns else ''}: {shown}\n"
                               f"stderr: {r.stderr.strip()}\nstdout: {r.stdout.strip()[-2000:]}")
        return r

    def sh_lines(self, cmds, ns=None):
        """Run several commands in order (each checked)."""
        for c in cmds:
            self.sh(c, ns=ns)

    def vlan_device(self, ns, parent, vid, v4, v6, hosts, mac=None):
        """A VLAN device on `parent` in `ns`, up, with an IPv4 and an IPv6 address
        (no DAD wait) and static neighbours `hosts` = [(ip, lladdr), ...]."""
        dev = f"{parent}.{vid}"
        address = f" address {mac}" if mac else ""
        self.sh_lines([f"ip link add link {parent} name {dev}{address} type vlan id {vid}",
                       f"ip addr add {v4} dev {dev}",
                       f"ip addr add {v6} dev {dev} nodad",
                       f"ip link set {dev} up"]
                      + [f"ip neigh replace {ip} lladdr {lladdr} dev {dev} nud permanent" for ip, lladdr in hosts],
                      ns=ns)
        return dev

    # ------------------------------------------------------------ namespaces
    def add_netns(self, name):
        """A fresh network namespace with lo up."""
        if os.path.exists(f"/run/netns/{name}"):
            self.sh(["ip", "netns", "del", name])
        self.sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def veth(self, a, ns_a, b, ns_b, up=True):
        """A veth pair: `a` in namespace ns_a, `b` in ns_b."""
        self.sh(["ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b])
        if up:
            self.sh(["ip", "-n", ns_a, "link", "set", a, "up"])
            self.sh(["ip", "-n", ns_b, "link", "set", b, "up"])

    @contextlib.contextmanager
    def netns(self, name):
        """Switch this thread's network namespace to `name` (None: stay) for the block."""
        if name is None:
            yield
            return
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(back)

    def sysctl(self, ns, key, value):
        path = "/proc/sys/" + key.replace(".", "/")
        with self.netns(ns):
            with open(path, "w") as f:
                f.write(f"{value}\n")

    def link(self, ns, dev):
        """`ip -j -d link show` of one device, as a dict."""
        r = self.sh(["ip", "-n", ns, "-j", "-d", "link", "show", "dev", dev])
        return json.loads(r.stdout)[0]

    def mac(self, ns, dev):
        return self.link(ns, dev)["address"]

    def vlan_offload(self, ns, dev, on):
        """Turn rx/tx VLAN offload of a device on or off (captures see tags either way)."""
        state = "on" if on else "off"
        self.sh(["ethtool", "-K", dev, "rxvlan", state, "txvlan", state], ns=ns)

    # ------------------------------------------------------------ frames
    def capture(self, ns, dev, direction="in"):
        """Open a capture on `dev` in `ns` (direction "in", "out" or "both")."""
        return Capture(self, ns, dev, direction)

    def send(self, ns, dev, frame):
        """Send one Ethernet frame (scapy packet or bytes) out of `dev` in `ns`."""
        data = bytes(frame)
        with self.netns(ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                s.bind((dev, 0))
                s.send(data)
            finally:
                s.close()

    def send_expect(self, send_ns, send_dev, frame, cap_ns, cap_dev, match,
                    timeout=EXPECT_TIMEOUT):
        """Capture on (cap_ns, cap_dev), send `frame`, return (matching frame or None, capture).

        The capture is open before the frame leaves, and the wait ends at the first match."""
        cap = self.capture(cap_ns, cap_dev)
        try:
            self.send(send_ns, send_dev, frame)
            return cap.expect(match, timeout), cap
        finally:
            cap.close()

    def send_expect_none(self, send_ns, send_dev, frame, cap_ns, cap_dev, match,
                         window=NONE_WINDOW):
        """Send `frame` and watch (cap_ns, cap_dev) for `window` seconds: the matching frame
        that came (a failure, usually), or None."""
        cap = self.capture(cap_ns, cap_dev)
        try:
            self.send(send_ns, send_dev, frame)
            return cap.expect_none(match, window)
        finally:
            cap.close()

    @staticmethod
    def mismatches(pairs):
        """[(label, actual, expected)] -> "label actual != expected; ..." for those that differ."""
        bad = [f"{label} {actual!r} (want {expected!r})" for label, actual, expected in pairs
               if actual != expected]
        return "; ".join(bad)

    # ------------------------------------------------------------ the daemon
    def daemon_path(self):
        """<build-dir>/agent/dpoffloadd, or None when no build dir was given or it is missing."""
        if not self.build_dir:
            return None
        p = os.path.join(self.build_dir, "agent", "dpoffloadd")
        return p if os.access(p, os.X_OK) else None

    # ------------------------------------------------------------ teardown
    def teardown(self):
        """Close captures and delete every namespace (also ones made by hand)."""
        for c in list(self._captures):
            c.close()
        names = set(self.namespaces)
        if os.path.isdir("/run/netns"):
            names |= set(os.listdir("/run/netns"))
        for n in sorted(names):
            self.sh(["ip", "netns", "del", n], check=False)
        self.namespaces = []


# ---------------------------------------------------------------- the daemon

def parse_log_line(line):
    """`<6>reconciled rules=38 kept=36 ...` -> ("reconciled", {"rules": "38", ...})."""
    m = re.match(r"<\d>(\S+)\s*(.*)$", line.strip())
    if not m:
        return None, {}
    fields = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(2))}
    return m.group(1), fields


class DaemonProcess:
    """dpoffloadd --config FILE in a netns, stderr to a file polled line by line."""

    def __init__(self, lab, ns, config, tag, args=()):
        self.lab, self.ns, self.tag = lab, ns, tag
        fd, self.log_path = tempfile.mkstemp(prefix=f"dpoffloadd-{tag}-", suffix=".log")
        self.log = os.fdopen(fd, "w")
        # A control socket and a state directory of its own (unless the scenario names
        # them): /run/dpoffload and /var/lib/dpoffload are the system's, and two daemons
        # of one scenario must not meet there.
        args = list(args)
        self.state_dir = tempfile.mkdtemp(prefix=f"dpo-{tag}-")
        if not any(a.startswith("--state-dir") for a in args):
            args += ["--state-dir", self.state_dir]
        if not any(a.startswith("--control-socket") for a in args):
            args += ["--control-socket", os.path.join(self.state_dir, "control.sock")]
        self.control_socket = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--control-socket"),
                                   os.path.join(self.state_dir, "control.sock"))
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, lab.daemon_path(), "--config", config, *args],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.t_start = time.monotonic()
        self.read_upto = 0   # lines consumed by next_event

    def lines(self):
        """The complete lines logged so far (a line still being written is left out)."""
        with open(self.log_path) as f:
            text = f.read()
        return text[:text.rfind("\n") + 1].splitlines()

    def next_event(self, name, timeout, pred=lambda f: True):
        """The next not yet consumed log line `name` (for which pred(fields)) as (fields, line),
        or (None, why). Lines before it are consumed too."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            while self.read_upto < len(lines):
                line = lines[self.read_upto]
                self.read_upto += 1
                ev, fields = parse_log_line(line)
                if ev == name and pred(fields):
                    return fields, line
            if self.proc.poll() is not None:
                return None, f"daemon exited {self.proc.returncode}; log: {self.tail()}"
            if time.monotonic() >= deadline:
                return None, f"no '{name}' line within {timeout:.0f} s; log: {self.tail()}"
            time.sleep(0.02)

    def wait_event(self, name, pred, timeout, since=0):
        """The first line `name` at or after line `since` with pred(fields): (fields, line, index)
        or (None, why, None). Does not consume."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            for i in range(since, len(lines)):
                ev, fields = parse_log_line(lines[i])
                if ev == name and pred(fields):
                    return fields, lines[i], i
            if self.proc.poll() is not None:
                return None, f"daemon exited {self.proc.returncode}; log: {self.tail()}", None
            if time.monotonic() >= deadline:
                return None, f"no matching '{name}' line within {timeout:.0f} s; log: {self.tail()}", None
            time.sleep(0.02)

    def skip_to_now(self):
        self.read_upto = len(self.lines())

    def events(self, name, since=0):
        """The fields of every line `name` logged at or after line `since`."""
        return [f for e, f in (parse_log_line(l) for l in self.lines()[since:]) if e == name]

    def tail(self, n=6):
        return " | ".join(self.lines()[-n:]) or "(empty)"

    def stop(self, timeout=10.0):
        """SIGTERM; its exit status, or None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()


def start_daemon(lab, config, tag, ns="hv", timeout=20.0, args=()):
    """Start dpoffloadd in `ns`; (daemon, fields of its first `reconciled` line, with
    `_line` and `_s` (seconds to it) added) or (daemon, None) after a failed check."""
    d = DaemonProcess(lab, ns, config, tag, args)
    fields, line = d.next_event("reconciled", timeout)
    if fields is None:
        lab.check(f"daemon ({tag}) started and reconciled", False, line)
        return d, None
    fields["_line"] = line.strip()
    fields["_s"] = f"{time.monotonic() - d.t_start:.1f}"
    return d, fields

# SPDX-License-Identifier: GPL-2.0-or-later
"""The Debian package under real systemd: installed, the unit failing on a missing or
unreadable mapping file, and an upgrade to a newer package that restarts the daemon
while traffic flows through its rules, without losing a packet.

    fabric netns                      hv netns: systemd (PID 1 of a PID namespace of its own)
    fab0  <------------ veth ------------>  p0   dpoffloadd.service, the package's unit as shipped
    (scapy sends and captures)              +- p0.100  blue     inner  10.100.0.1/24
                                            +- p0.101  red      inner  10.101.0.1/24
                                            +- p0.200  transit  outer  10.200.0.1/24 (NAT)

The root systemd boots and dpkg installs into is an overlay (tmpfs upper) over the host's
root, which the guest sees read-only. systemd (the host's, 252) runs the unit with all its
hardening: DynamicUser, the SystemCallFilter (seccomp), IPAddressDeny (cgroup BPF),
MemoryMax, ProtectProc, ... The postinst's `deb-systemd-invoke try-restart` is real.
Departures from a real host, none of them in what is checked: systemd is PID 1 of a PID
namespace in the hv netns, not of the guest; udev (it would rename MACs of the lab's
veths), systemd-tmpfiles-setup (it walks the 9p root for a minute under emulation) and a
few services that need hardware or a first boot are masked; /usr/lib/modules/VERSION is
the lab's kernel cache; the host image's /usr/sbin/policy-rc.d (Docker's "start nothing")
is removed.

Two packages, the tree's version and VERSION+test1, are built beforehand on the host with
the real packaging (packaging/lab-debs.sh; meson's `lab` test builds them); this
scenario finds them through <build-dir>/test/lab/debs.json.

The kernel's forwarding is off in hv: a frame that comes back routed was routed by tc.
"""

import json
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import describe, parse_log_line, vlans

MACS = {100: "02:dd:00:00:64:01", 101: "02:dd:00:00:65:01", 200: "02:dd:00:00:c8:01"}
SUB_A, SUB_A_MAC = "10.100.0.2", "02:00:00:00:01:02"   # blue, sends the stream
SUB_B, SUB_B_MAC = "10.100.0.3", "02:00:00:00:01:03"   # blue, a first packet after the upgrade
RED, RED_MAC = "10.101.0.2", "02:00:00:00:02:02"       # red: the stream's receiver
GW_MAC = "02:00:00:00:c8:fe"
REMOTE = "203.0.113.9"
POOL_PREFIX = "198.51.100."                            # 198.51.100.0/30

MAPPING = """{
  "uplink": "p0",
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100", "role": "inner", "vlan": 100 },
    { "name": "red",     "netdev": "p0.101", "role": "inner", "vlan": 101 },
    { "name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200 }
  ],
  "nat": { "zone": 1, "pool": ["198.51.100.0/30"] }
}
"""

CONFIG = "/etc/dpoffload/mapping.json"
UNIT = "dpoffloadd.service"
# Whatever could interfere or wait for hardware; each is a symlink to /dev/null in the overlay.
# The rest of sysinit.target (journald, systemd-modules-load, systemd-sysctl, ...) runs.
MASKED = ["systemd-udevd.service", "systemd-udev-trigger.service", "systemd-udevd-control.socket",
          "systemd-udevd-kernel.socket", "systemd-udev-settle.service", "systemd-tmpfiles-setup.service",
          "systemd-timesyncd.service", "systemd-pstore.service", "systemd-firstboot.service",
          "systemd-repart.service", "systemd-update-utmp.service", "getty@tty1.service",
          "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "sys-fs-fuse-connections.mount",
          "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
          "dev-hugepages.mount", "systemd-random-seed.service", "systemd-machine-id-commit.service",
          "systemd-hwdb-update.service", "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service",
          "systemd-journal-flush.service", "systemd-ask-password-console.path"]
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BOOT_TIMEOUT = 90.0       # systemd to sysinit.target under emulation
START_TIMEOUT = 30.0      # the unit started to the daemon's first `reconciled`
RESTART_TIMEOUT = 60.0    # dpkg -i of the newer package to the new daemon's `reconciled`
STREAM_INTERVAL = 0.01    # the stream: 100 packets a second, blue -> red
STREAM_MAGIC = b"dpo-upgrade-stream "
AFTER = 50                # packets of the stream routed after the new daemon reconciled
DRAIN_TIMEOUT = 5.0


# ---------------------------------------------------------------- systemd in an overlay root

class Systemd:
    """systemd as PID 1 of a PID and mount namespace in the hv netns, booting an overlay
    of the host's root. `run` executes a command inside (its mount, PID and net namespaces,
    its root), as a root shell on that machine would."""

    def __init__(self, lab):
        self.lab = lab
        self.base = "/tmp/dpo-pkgroot"
        self.root = f"{self.base}/merged"
        self.proc = None
        self.pid = None
        self.log_path = f"{self.base}.log"

    def prepare(self):
        lab, b = self.lab, self.base
        os.makedirs(b, exist_ok=True)
        lab.sh(f"mount -t tmpfs -o mode=755 dpo-pkgroot {b}")
        os.makedirs(f"{b}/upper")
        os.makedirs(f"{b}/work")
        os.makedirs(self.root)
        lab.sh(f"mount -t overlay overlay -o lowerdir=/,upperdir={b}/upper,workdir={b}/work {self.root}")
        units = f"{self.root}/etc/systemd/system"
        for u in MASKED:
            p = f"{units}/{u}"
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink("/dev/null", p)
        with open(f"{units}/dpo-lab.target", "w") as f:
            f.write("[Unit]\nDescription=dpoffload lab\nRequires=sysinit.target\nAfter=sysinit.target\n")
        # modprobe and systemd-modules-load look in /usr/lib/modules/$(uname -r).
        kroot, kver = os.environ.get("DPO_LAB_KROOT", ""), os.uname().release
        if kroot:
            os.makedirs(f"{self.root}/usr/lib/modules", exist_ok=True)
            link = f"{self.root}/usr/lib/modules/{kver}"
            if not os.path.exists(link):
                os.symlink(f"{kroot}/lib/modules/{kver}", link)
        # The host image's policy-rc.d (Docker's: "exit 101", start nothing) would make
        # deb-systemd-invoke skip every start and restart; a hypervisor has none.
        for p in (f"{self.root}/usr/sbin/policy-rc.d", f"{self.root}/etc/dpoffload"):
            if os.path.lexists(p):
                self.lab.sh(["rm", "-rf", p])

    def boot(self):
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["nsenter", "--net=/run/netns/hv", "unshare", "--pid", "--mount", "--fork", "--propagation",
             "private", "chroot", self.root, "/lib/systemd/systemd", "--unit=dpo-lab.target",
             "--show-status=false"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={"PATH": GUEST_PATH, "LANG": "C.UTF-8"})
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.pid is None:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = f.read().split()
                if kids:
                    self.pid = int(kids[0])
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return f"systemd did not start (exit {self.proc.poll()}); log: {self.log_tail()}"
            time.sleep(0.05)
        state = ""
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return None
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        return f"systemd is {state!r}, not running; log: {self.log_tail()}"

    def log_tail(self):
        try:
            with open(self.log_path) as f:
                return " | ".join(f.read().splitlines()[-8:])
        except OSError:
            return "(no log)"

    def run(self, argv, check=True, timeout=120):
        cmd = ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-r", "-w",
               "env", "-i", f"PATH={GUEST_PATH}", "LANG=C.UTF-8", "HOME=/root"] + list(argv)
        return self.lab.sh(cmd, check=check, timeout=timeout)

    def show(self, prop):
        return self.run(["systemctl", "show", "-p", prop, "--value", UNIT]).stdout.strip()

    def journal(self, *match):
        return self.run(["journalctl", "--no-pager", "-o", "cat", *match], check=False).stdout

    def wait_journal(self, pattern, timeout, *match):
        """The first journal line (of `match`) that matches `pattern`, or None."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.journal(*match).splitlines():
                if re.search(pattern, line):
                    return line
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)   # each look is a journalctl under emulation

    def path(self, p):
        return self.root + p

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, 9)   # PID 1 of its namespace: everything in it goes
            except ProcessLookupError:
                pass
        if self.proc:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.lab.sh(["umount", "-l", self.root], check=False)
        self.lab.sh(["umount", "-l", self.base], check=False)


# ---------------------------------------------------------------- the stream

class Stream:
    """UDP from SUB_A (blue) to RED every STREAM_INTERVAL, each with a sequence number;
    the routed copies (VLAN 101, TTL 63, RED's MAC) are counted as they come back on fab0.
    Raw sockets and bytes, no scapy per packet: emulation is slow."""

    def __init__(self, lab):
        self.lab = lab
        frame = (Ether(src=SUB_A_MAC, dst=MACS[100]) / Dot1Q(vlan=100) /
                 IP(src=SUB_A, dst=RED, ttl=64) / UDP(sport=42000, dport=5001, chksum=0) /
                 Raw(STREAM_MAGIC + b"\0" * 8))
        self.template = bytes(frame)
        self.sent = []          # (seq, monotonic time)
        self.got = {}           # seq -> count
        self.bad = []           # frames with our magic that came back wrong
        self.stop_send = threading.Event()
        self.stop_recv = threading.Event()
        with lab.netns("fabric"):
            r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            r.setsockopt(263, 8, 1)   # SOL_PACKET, PACKET_AUXDATA: the VLAN tag
            r.bind(("fab0", 0x0003))
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind(("fab0", 0))
        self.rx, self.tx = r, s
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def _send(self):
        seq, t_next = 0, time.monotonic()
        head = self.template[:-8]
        while not self.stop_send.is_set():
            seq += 1
            self.tx.send(head + struct.pack("!Q", seq))
            self.sent.append((seq, time.monotonic()))
            t_next += STREAM_INTERVAL
            self.stop_send.wait(max(0.0, t_next - time.monotonic()))   # pacing the sender

    def _recv(self):
        off = 14 + 20 + 8   # untagged Ethernet, IPv4, UDP
        while not self.stop_recv.is_set():
            r, _, _ = select.select([self.rx], [], [], 0.1)
            if not r:
                continue
            data, anc, _flags, addr = self.rx.recvmsg(2048, socket.CMSG_SPACE(20))
            if addr[2] == 4:   # PACKET_OUTGOING: what we sent
                continue
            if data[off:off + len(STREAM_MAGIC)] != STREAM_MAGIC:
                continue
            vid = None
            for level, typ, cdata in anc:
                if level == 263 and typ == 8 and len(cdata) >= 20:
                    status, _l, _s, _m, _n, tci, _tpid = struct.unpack("=IIIHHHH", cdata[:20])
                    if status & (1 << 4):
                        vid = tci & 0xfff
            seq = struct.unpack("!Q", data[off + len(STREAM_MAGIC):off + len(STREAM_MAGIC) + 8])[0]
            ttl, dst = data[22], data[0:6]
            if vid != 101 or ttl != 63 or dst != bytes.fromhex(RED_MAC.replace(":", "")):
                self.bad.append(f"seq {seq}: vlan {vid} ttl {ttl} dst {dst.hex(':')}")
                continue
            self.got[seq] = self.got.get(seq, 0) + 1

    def finish(self):
        self.stop_send.set()
        self.threads[0].join()
        total = len(self.sent)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while len(self.got) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop_recv.set()
        self.threads[1].join()
        self.rx.close()
        self.tx.close()

    def sent_between(self, t0, t1):
        return sum(1 for _s, t in self.sent if t0 <= t <= t1)


# ---------------------------------------------------------------- helpers

def setup_network(lab):
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    for vid, v4, hosts in ((100, "10.100.0.1/24", [(SUB_A, SUB_A_MAC), (SUB_B, SUB_B_MAC)]),
                           (101, "10.101.0.1/24", [(RED, RED_MAC)]),
                           (200, "10.200.0.1/24", [("10.200.0.254", GW_MAC)])):
        dev = f"p0.{vid}"
        lab.sh_lines([f"ip link add link p0 name {dev} address {MACS[vid]} type vlan id {vid}",
                      f"ip addr add {v4} dev {dev}",
                      f"sysctl -q -w net.ipv6.conf.p0/{vid}.disable_ipv6=1",
                      f"ip link set {dev} up"]
                     + [f"ip neigh replace {ip} lladdr {mac} dev {dev} nud permanent" for ip, mac in hosts],
                     ns="hv")
    lab.sh("ip route add default via 10.200.0.254 dev p0.200", ns="hv")
    lab.sysctl("hv", "net.ipv4.ip_forward", 0)
    lab.sysctl("hv", "net.ipv6.conf.all.forwarding", 0)
    lab.sysctl("fabric", "net.ipv6.conf.fab0.disable_ipv6", 1)


def mirred_packets(lab, vid):
    """Packets counted by the shared mirred action of egress VLAN `vid` (0xd9000000 + vid)."""
    r = lab.sh(["tc", "-s", "actions", "get", "action", "mirred", "index", str(0xd9000000 + vid)],
               ns="hv", check=False)
    m = re.search(r"Sent \d+ bytes (\d+) pkt", r.stdout)
    return int(m.group(1)) if m else None


def nat_first_packet(lab, sub, mac, sport, tag):
    """A subscriber's first packet to REMOTE: out on VLAN 200 with a pool address (punted to
    the daemon, chunk, rule, put back). Returns the frame or None."""
    payload = f"dpo-upgrade nat {tag}".encode()
    frame = (Ether(src=mac, dst=MACS[100]) / Dot1Q(vlan=100) / IP(src=sub, dst=REMOTE, ttl=64) /
             UDP(sport=sport, dport=5001) / Raw(payload))
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0",
                               lambda p: Raw in p and p[Raw].load == payload, timeout=10.0)
    ok = got is not None and vlans(got) == [200] and got[IP].src.startswith(POOL_PREFIX) and got.dst == GW_MAC
    lab.check(f"NAT under the unit's hardening ({tag}): {sub} -> {REMOTE} first packet comes out translated "
              f"on vlan 200", ok,
              f"got {describe(got)}" if got is not None else f"nothing on fab0; {cap.others_summary()}")
    return got


def reconciled_of(sd, pid, timeout):
    """The fields of process `pid`'s first `reconciled` line in the journal, or (None, why)."""
    line = sd.wait_journal(r"reconciled ", timeout, f"_PID={pid}")
    if line is None:
        return None, f"no reconciled line from pid {pid} within {timeout:.0f} s; journal: " \
                     f"{' | '.join(sd.journal('-u', UNIT).splitlines()[-8:])}"
    _ev, fields = parse_log_line(line if line.startswith("<") else "<6>" + line)
    fields["_line"] = line
    return fields, None


def reset_unit(sd):
    sd.run(["systemctl", "stop", UNIT], check=False)
    sd.run(["systemctl", "reset-failed", UNIT], check=False)


# ---------------------------------------------------------------- the scenario

def run(lab):
    manifest = os.path.join(lab.build_dir or "", "test", "lab", "debs.json")
    if not lab.check("test packages built (test/lab/debs.json)", os.path.isfile(manifest),
                     f"{manifest} missing: `ninja -C BUILD test/lab/debs.json` builds them "
                     f"(meson test --suite lab does)"):
        return
    with open(manifest) as f:
        debs = json.load(f)
    old, new = debs["old"], debs["new"]

    setup_network(lab)
    sd = Systemd(lab)
    try:
        sd.prepare()
        t0 = time.monotonic()
        why = sd.boot()
        if not lab.check("systemd boots the overlay root in the hv netns", why is None, why):
            return
        lab.note(f"systemd up in {time.monotonic() - t0:.1f} s")
        scenario(lab, sd, old, new)
    finally:
        sd.stop()


def scenario(lab, sd, old, new):
    # -- install: the postinst applies the sysctl and modules-load files now.
    module = None
    for m in ("vxlan", "act_tunnel_key", "act_csum"):
        if os.path.isdir(f"/sys/module/{m}") and lab.sh(["rmmod", m], check=False).returncode == 0:
            module = m
            break
    lab.check("a listed module unloaded before the install (to see the postinst load it)", module is not None,
              "none of vxlan, act_tunnel_key, act_csum could be unloaded")
    lab.sysctl("hv", "net.netfilter.nf_conntrack_events", 0)

    r = sd.run(["dpkg", "-i", old["deb"]], check=False)
    lab.check(f"dpkg -i {os.path.basename(old['deb'])} (first install)", r.returncode == 0,
              f"exit {r.returncode}: {r.stderr.strip()[-800:]}")
    if r.returncode != 0:
        return
    if r.stderr.strip():
        lab.note(f"dpkg said: {' | '.join(r.stderr.strip().splitlines()[-4:])}")
    if module:
        lab.check(f"postinst loaded the modules now ({module} is loaded again)", os.path.isdir(f"/sys/module/{module}"),
                  f"/sys/module/{module} missing after the install")
    with lab.netns("hv"):
        with open("/proc/sys/net/netfilter/nf_conntrack_events") as f:
            events = f.read().strip()
    lab.check("postinst applied the sysctl file now (net.netfilter.nf_conntrack_events 0 -> 1)", events == "1",
              f"it is {events}")
    enabled = sd.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip()
    active = sd.run(["systemctl", "is-active", UNIT], check=False).stdout.strip()
    lab.check("the unit is enabled and not started by the first install (no mapping file yet)",
              (enabled, active) == ("enabled", "inactive"), f"is-enabled {enabled}, is-active {active}")

    # -- a missing mapping file fails the unit, with the reason in the journal.
    r = sd.run(["systemctl", "start", UNIT], check=False)
    line = sd.wait_journal(r"cannot open: No such file or directory", 10.0, "-u", UNIT)
    lab.check("systemctl start without the mapping file fails (not skipped) and the journal says "
              "'cannot open: No such file or directory'", r.returncode != 0 and line is not None,
              f"systemctl start exit {r.returncode}; journal: {' | '.join(sd.journal('-u', UNIT).splitlines()[-6:])}")
    reset_unit(sd)

    # -- root-owned 0600 cannot be read by the dynamic user; 0644 can (README).
    os.makedirs(sd.path("/etc/dpoffload"), exist_ok=True)
    with open(sd.path(CONFIG), "w") as f:
        f.write(MAPPING)
    os.chmod(sd.path(CONFIG), 0o600)
    r = sd.run(["systemctl", "start", UNIT], check=False)
    line = sd.wait_journal(r"cannot open: Permission denied", 10.0, "-u", UNIT)
    lab.check("a root-owned 0600 mapping file fails the unit: 'cannot open: Permission denied' (DynamicUser)",
              r.returncode != 0 and line is not None,
              f"systemctl start exit {r.returncode}; journal: {' | '.join(sd.journal('-u', UNIT).splitlines()[-6:])}")
    reset_unit(sd)
    os.chmod(sd.path(CONFIG), 0o644)

    # -- started with 0644: the daemon runs under the unit's hardening.
    r = sd.run(["systemctl", "start", UNIT], check=False)
    pid1 = sd.show("MainPID")
    rec1, why = reconciled_of(sd, pid1, START_TIMEOUT) if r.returncode == 0 and pid1 != "0" else (None, r.stderr)
    if not lab.check(f"systemctl start with a 0644 mapping file: the daemon ({old['version']}) reconciled",
                     rec1 is not None, why):
        return
    lab.note(f"old daemon pid {pid1}: {rec1['_line']}")
    check_ready(lab, sd, pid1)
    nat_first_packet(lab, SUB_A, SUB_A_MAC, 43001, "old daemon")
    check_journal_fields(lab, sd, pid1)
    check_watchdog_and_dirs(lab, sd, pid1)

    # -- the upgrade, under a stream of packets.
    stream = Stream(lab)
    before = mirred_packets(lab, 101)
    stream.start()
    deadline = time.monotonic() + 5.0
    while not stream.got and time.monotonic() < deadline:
        time.sleep(0.02)
    lab.check("the stream is routed by tc before the upgrade", bool(stream.got), f"nothing back; {stream.bad[:3]}")
    # What the old daemon had installed last (NAT's first packet added a rule since its start).
    last = [l for l in sd.journal(f"_PID={pid1}").splitlines() if re.search(r"reconciled ", l)]
    _ev, rec1_last = parse_log_line("<6>" + last[-1]) if last else (None, rec1)
    t_dpkg = time.monotonic()
    r = sd.run(["dpkg", "-i", new["deb"]], check=False)
    t_dpkg_end = time.monotonic()
    lab.check(f"dpkg -i {os.path.basename(new['deb'])} (upgrade) with the daemon running",
              r.returncode == 0, f"exit {r.returncode}: {r.stderr.strip()[-800:]}")
    if r.stderr.strip():
        lab.note(f"dpkg said: {' | '.join(r.stderr.strip().splitlines()[-4:])}")
    pid2, deadline = sd.show("MainPID"), time.monotonic() + RESTART_TIMEOUT
    while pid2 in (pid1, "0") and time.monotonic() < deadline:
        time.sleep(0.1)
        pid2 = sd.show("MainPID")
    restarted = lab.check("the postinst restarted the daemon (a new MainPID)", pid2 not in (pid1, "0"),
                          f"MainPID is still {pid2} (was {pid1}): the old binary keeps running")
    rec2 = None
    if restarted:
        rec2, why = reconciled_of(sd, pid2, RESTART_TIMEOUT)
        lab.check("the new daemon reconciled", rec2 is not None, why)
    t_rec = time.monotonic()
    if rec2:
        # The stream goes on until AFTER packets sent after the new daemon's reconcile are back.
        mark = len(stream.sent)
        deadline = time.monotonic() + 10.0
        while sum(1 for s in stream.got if s > mark) < AFTER and time.monotonic() < deadline:
            time.sleep(0.05)
    stream.finish()
    after = mirred_packets(lab, 101)

    # -- the new binary runs, adopted the rules, and no packet was lost.
    if restarted:
        # Seen from outside the service's mount namespace the path may carry the overlay's
        # prefix; an old binary replaced by dpkg would end in " (deleted)".
        exe = sd.run(["readlink", f"/proc/{pid2}/exe"], check=False).stdout.strip()
        ver = sd.run([f"/proc/{pid2}/exe", "--version"], check=False).stdout.strip()
        lab.check(f"the running daemon is the new binary: /usr/sbin/dpoffloadd, "
                  f"--version 'dpoffloadd {new['version']}'",
                  exe.endswith("/usr/sbin/dpoffloadd") and ver == f"dpoffloadd {new['version']}",
                  f"/proc/{pid2}/exe -> {exe!r}, --version {ver!r}")
    pkg = sd.run(["dpkg-query", "-W", "-f=${Version}", "dpoffloadd"], check=False).stdout.strip()
    lab.check(f"dpkg says {new['version']} is installed", pkg == new["version"], f"it says {pkg!r}")
    if rec2:
        lab.check(f"the new daemon adopted every rule with no change (messages=0, rules={rec1_last.get('rules')}, "
                  f"as the old one left them)",
                  rec2.get("messages") == "0" and rec2.get("rules") == rec1_last.get("rules"),
                  rec2["_line"])
        lab.note(f"new daemon pid {pid2}: {rec2['_line']}")
    sent = len(stream.sent)
    got = len(stream.got)
    missing = [s for s, _t in stream.sent if s not in stream.got]
    dups = [s for s, n in stream.got.items() if n > 1]
    during = stream.sent_between(t_dpkg, t_rec)
    lab.note(f"stream: {sent} sent at {1 / STREAM_INTERVAL:.0f}/s, {got} routed back, {len(missing)} missing, "
             f"{len(dups)} twice, {len(stream.bad)} wrong; {during} sent between dpkg -i and the new "
             f"daemon's reconcile; dpkg -i took {t_dpkg_end - t_dpkg:.1f} s, to reconciled "
             f"{t_rec - t_dpkg:.1f} s; mirred vlan 101 counter +{(after or 0) - (before or 0)}")
    lab.check(f"every packet of the stream across the upgrade was routed by tc ({got}/{sent}, "
              f"{during} of them during the restart)",
              sent > 0 and not missing and not dups and not stream.bad and during > 0,
              f"missing {missing[:10]}{'...' if len(missing) > 10 else ''} ({len(missing)}), twice {dups[:5]}, "
              f"wrong {stream.bad[:3]}, during {during}")
    lab.check(f"tc's mirred counter of vlan 101 counted them ({sent})",
              before is not None and after is not None and after - before == sent,
              f"before {before}, after {after}, sent {sent}")
    if rec2:
        nat_first_packet(lab, SUB_B, SUB_B_MAC, 43002, "new daemon")
        # A reload (a thread of its own) and an operator's audit (a full dump), under the
        # unit's system call filter too.
        # ExecReload= is `dpoffloadctl reload`: systemctl reload waits for the verdict.
        r = sd.run(["systemctl", "reload", UNIT], check=False)
        reloaded = sd.wait_journal(r"reloaded ", 20.0, f"_PID={pid2}")
        sd.run(["systemctl", "kill", "-s", "USR1", UNIT], check=False)
        audit = sd.wait_journal(r"audit reason=\S+ dumps=\d+ drift=0", 20.0, f"_PID={pid2}")
        lab.check("systemctl reload (ExecReload=dpoffloadctl reload: exit 0, 'reloaded') and systemctl kill "
                  "-s USR1 (an audit, drift=0) served under the unit",
                  r.returncode == 0 and reloaded is not None and audit is not None,
                  f"systemctl reload: exit {r.returncode} {r.stderr.strip()}; reloaded: {reloaded}; audit: {audit}; "
                  f"journal: {' | '.join(sd.journal('-u', UNIT).splitlines()[-6:])}")
        check_reload_verdicts(lab, sd, pid2)
    state = sd.run(["systemctl", "is-active", UNIT], check=False).stdout.strip()
    restarts = sd.show("NRestarts")
    lab.check("the unit is active and was never restarted by Restart=on-failure", state == "active" and
              restarts == "0", f"is-active {state}, NRestarts {restarts}")
    warnings = [l for l in sd.journal("-u", UNIT, "-p", "warning").splitlines() if l.strip()]
    if warnings:
        lab.note(f"journal warnings of the unit: {' | '.join(warnings[-6:])}")

    check_installed_files(lab, sd)


def journal_json(sd, *match):
    """The journal entries of `match` as dicts (journalctl -o json)."""
    out = sd.run(["journalctl", "--no-pager", "-o", "json", *match], check=False).stdout
    entries = []
    for line in out.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass
    return entries


def check_ready(lab, sd, pid):
    """Type=notify: `systemctl start` returned once the unit was active, and it became
    active only after the start pass had put the rules in (READY=1 after it)."""
    start = [e for e in journal_json(sd, "-u", UNIT, f"_PID={pid}", "EVENT=reconciled") if e.get("LANE") == "start"]
    entered = int(sd.show("ActiveEnterTimestampMonotonic") or 0)
    t_start = int(start[0]["__MONOTONIC_TIMESTAMP"]) if start else 0
    lab.check("Type=notify: the unit became active after the start pass was logged (READY=1 after the rules), "
              f"{(entered - t_start) / 1000:.0f} ms after it",
              sd.show("Type") == "notify" and start and entered > t_start,
              f"Type {sd.show('Type')}, ActiveEnterTimestampMonotonic {entered}, start pass at {t_start} "
              f"({len(start)} entries)")
    status = sd.show("StatusText")
    lab.check(f"systemctl show -p StatusText: the daemon's summary ({status})",
              re.match(r"rules \d+ \(in_hw \d+, not_in_hw \d+, refused \d+\); routes \d+; NAT \d+ subscribers; "
                       r"last audit \d\d:\d\d:\d\dZ drift \d+", status) is not None, status)


def check_journal_fields(lab, sd, pid):
    """Log records are journal fields: EVENT=, PRIORITY=, each key upper-cased."""
    rec = journal_json(sd, "-u", UNIT, "EVENT=reconciled")
    ours = [e for e in rec if e.get("_PID") == str(pid)]
    e = ours[0] if ours else {}
    lab.check(f"journalctl -u {UNIT} EVENT=reconciled: {len(rec)} entries with fields "
              f"(RULES={e.get('RULES')}, LANE={e.get('LANE')}, PRIORITY={e.get('PRIORITY')}, "
              f"MESSAGE starts 'reconciled rules=')",
              e.get("RULES", "").isdigit() and e.get("PRIORITY") == "6" and e.get("LANE") == "start" and
              str(e.get("MESSAGE", "")).startswith(f"reconciled rules={e.get('RULES')} ") and
              e.get("SYSLOG_IDENTIFIER") == "dpoffloadd",
              f"{len(rec)} entries; first of pid {pid}: {e}")
    chunk = journal_json(sd, "-u", UNIT, "EVENT=chunk-allocated", f"SUBSCRIBER={SUB_A}")
    c = chunk[0] if chunk else {}
    lab.check(f"journalctl -u {UNIT} EVENT=chunk-allocated SUBSCRIBER={SUB_A}: the NAT attribution record "
              f"(PUBLIC={c.get('PUBLIC')}, PORTS={c.get('PORTS')}, PRIORITY={c.get('PRIORITY')})",
              len(chunk) == 1 and str(c.get("PUBLIC", "")).startswith(POOL_PREFIX) and
              re.fullmatch(r"\d+-\d+", str(c.get("PORTS", ""))) and c.get("PRIORITY") == "5",
              f"{len(chunk)} entries: {chunk[:2]}")
    lab.check("the unit lifts journald's rate limit (LogRateLimitIntervalUSec=0)",
              sd.show("LogRateLimitIntervalUSec") in ("0", "infinity", "0s"),
              f"LogRateLimitIntervalUSec={sd.show('LogRateLimitIntervalUSec')}")


def check_watchdog_and_dirs(lab, sd, pid):
    """WatchdogSec= armed and fed from the event loop; the runtime and state directories
    and the supplementary group exist for the dynamic user."""
    usec = sd.show("WatchdogUSec")
    first = sd.show("WatchdogTimestampMonotonic")
    deadline, last = time.monotonic() + 20.0, first
    while last == first and time.monotonic() < deadline:
        time.sleep(0.5)   # each look is a systemctl under emulation; pings come every 7.5 s
        last = sd.show("WatchdogTimestampMonotonic")
    lab.check(f"the watchdog is armed (WatchdogUSec={usec}) and fed: its timestamp moved "
              f"{(int(last or 0) - int(first or 0)) / 1e6:.1f} s on",
              usec == "30s" and last != first and int(last or 0) > int(first or 0),
              f"WatchdogUSec {usec}, WatchdogTimestampMonotonic {first} -> {last}")
    group = sd.run(["getent", "group", "dpoffload"], check=False).stdout.strip()
    gid = group.split(":")[2] if group.count(":") >= 3 else None
    status = sd.run(["cat", f"/proc/{pid}/status"], check=False).stdout
    pgid = (re.search(r"^Gid:\s*(\d+)", status, re.M) or [None, "?"])[1]
    uid = (re.search(r"^Uid:\s*(\d+)", status, re.M) or [None, "?"])[1]
    lab.check(f"postinst made the system group dpoffload ({group}); the daemon runs in it "
              f"(Group=, DynamicUser uid {uid}, gid {pgid})",
              gid is not None and pgid == gid and uid not in ("0", "?", gid), f"group {group!r}, status {status[:300]}")
    sock = sd.run(["stat", "-c", "%a %U %G %F", "/run/dpoffload/control.sock"], check=False).stdout.strip()
    lab.check(f"the control socket is 0660 and the group dpoffload's ({sock})",
              sock.startswith("660 ") and " dpoffload socket" in sock, sock)
    # An operator in the group may look; a user outside it may not connect.
    sd.run(["useradd", "--no-create-home", "-G", "dpoffload", "dpo-operator"], check=False)
    sd.run(["useradd", "--no-create-home", "dpo-outsider"], check=False)
    look = sd.run(["setpriv", "--reuid=dpo-operator", "--regid=dpo-operator", "--init-groups",
                   "dpoffloadctl", "status"], check=False)
    lab.check("an operator in the group dpoffload: dpoffloadctl status answers (exit 0)",
              look.returncode == 0 and "DEVICE" in look.stdout, f"exit {look.returncode}: {look.stderr.strip()}")
    audit = sd.run(["setpriv", "--reuid=dpo-operator", "--regid=dpo-operator", "--init-groups",
                    "dpoffloadctl", "audit"], check=False)
    lab.check("...but not dpoffloadctl audit: root only (exit 1)", audit.returncode == 1 and "root only" in audit.stderr,
              f"exit {audit.returncode}: {audit.stderr.strip()}")
    out = sd.run(["setpriv", "--reuid=dpo-outsider", "--regid=dpo-outsider", "--init-groups",
                  "dpoffloadctl", "status"], check=False)
    lab.check("a user outside the group cannot connect (exit 3)", out.returncode == 3,
              f"exit {out.returncode}: {out.stderr.strip()}")
    st = sd.run(["stat", "-L", "-c", "%a %u %F", "/run/dpoffload", "/var/lib/dpoffload"], check=False).stdout.split("\n")
    lab.check(f"RuntimeDirectory /run/dpoffload and StateDirectory /var/lib/dpoffload belong to the daemon's "
              f"user ({'; '.join(l for l in st if l)})",
              len(st) >= 2 and st[0] == f"755 {uid} directory" and st[1].split()[1:] == [uid, "directory"],
              f"stat: {st}")


def check_reload_verdicts(lab, sd, pid):
    """A refused file under systemd: the unit stays active, StatusText says why, the
    running configuration stays; the good file again: 'reloaded'."""
    with open(sd.path(CONFIG)) as f:
        good = f.read()
    with open(sd.path(CONFIG), "w") as f:
        f.write(good.replace('"vlan": 101', '"vlan": 4095'))
    r = sd.run(["systemctl", "reload", UNIT], check=False)
    problem = sd.journal("-u", UNIT, "-n", "20")
    lab.check("systemctl reload of a refused file fails (dpoffloadctl reload exits 1) and the problem "
              "(vlan 4095) is in the unit's journal", r.returncode != 0 and "4095" in problem,
              f"systemctl reload exit {r.returncode}; journal: {problem[-600:]}")
    deadline, status = time.monotonic() + 20.0, ""
    while "reload refused" not in status and time.monotonic() < deadline:
        time.sleep(0.5)   # each look is a systemctl under emulation
        status = sd.show("StatusText")
    state = sd.run(["systemctl", "is-active", UNIT], check=False).stdout.strip()
    lab.check(f"a refused file: the unit stays active, StatusText says so ({status})",
              re.search(r"reload refused \S+: 1 problem, running configuration kept", status) and state == "active"
              and sd.show("MainPID") == pid, f"is-active {state}, StatusText {status!r}")
    with open(sd.path(CONFIG), "w") as f:
        f.write(good)
    r = sd.run(["systemctl", "reload", UNIT], check=False)
    lab.check("systemctl reload of the good file again: exit 0", r.returncode == 0, r.stderr.strip())
    deadline = time.monotonic() + 20.0
    while not re.search(r"; reloaded ", status) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = sd.show("StatusText")
    lab.check(f"the good file again: StatusText says reloaded ({status})", re.search(r"; reloaded ", status),
              f"StatusText {status!r}")


def check_installed_files(lab, sd):
    doc = sd.show("Documentation")
    path = doc.split()[0][len("file://"):] if doc.startswith("file://") else None
    ok = path is not None and os.path.isfile(sd.path(path))
    lab.check(f"the unit's Documentation= ({doc}) is a file that is installed uncompressed", ok,
              f"{path} missing in the installed package")
    docs = sorted(os.listdir(sd.path("/usr/share/doc/dpoffloadd/docs"))) \
        if os.path.isdir(sd.path("/usr/share/doc/dpoffloadd/docs")) else []
    want = sorted(p for p in os.listdir(os.path.join(lab.source_root, "docs")) if p.endswith(".md"))
    lab.check(f"docs/ is shipped in /usr/share/doc/dpoffloadd/docs ({len(want)} files, uncompressed)",
              docs == want, f"installed {docs}, tree {want}")
    import jsonschema
    exdir = "/usr/share/doc/dpoffloadd/examples"
    examples = sorted(p for p in os.listdir(sd.path(exdir)) if p.endswith(".json")) \
        if os.path.isdir(sd.path(exdir)) else []
    lab.check("the examples are installed", len(examples) >= 3, f"found {examples}")
    for name in examples:
        with open(sd.path(f"{exdir}/{name}")) as f:
            doc = json.load(f)
        ref = doc.get("$schema", "")
        target = os.path.normpath(os.path.join(exdir, ref))   # an absolute ref stays itself
        problem = None
        if not os.path.isfile(sd.path(target)):
            problem = f"$schema {ref!r} names {target}, which is not installed"
        else:
            with open(sd.path(target)) as f:
                schema = json.load(f)
            errs = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            if errs:
                problem = "; ".join(e.message for e in errs[:3])
        r = sd.run(["dpoffloadd", "--check", "--config", f"{exdir}/{name}"], check=False)
        if r.returncode != 0:
            problem = (problem + "; " if problem else "") + f"dpoffloadd --check: {r.stderr.strip()}"
        lab.check(f"installed example {name}: its $schema ({ref}) is the installed schema and validates it; "
                  f"--check accepts it", problem is None, problem)

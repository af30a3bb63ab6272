# SPDX-License-Identifier: GPL-2.0-or-later
"""NAT's punt path on the real kernel: a frame punted from the uplink's tc ingress reaches
the daemon with its VLAN tag, and put back it runs the uplink's ingress again from chain 0.

    fabric netns                      hv netns
    fab0  <------- veth ------->  p0   clsact ingress chain 0 prio 10:
    (scapy sends)                  |     802.1Q vlan_id 100 udp dst_port 9999
                                   |       -> mirred egress redirect dev dpo-inject
                                   +- p0.100  10.100.0.1/24 (UDP socket on :9999, bound to p0.100)
                                  dpo-inject ==veth==> dpo-punt -> build/test/punt-probe (PuntPort)
                                  dpo-inject ingress: mirred ingress redirect dev p0  <== written back

`build/test/punt-probe` (test/kernel/punt_probe.cpp) opens the daemon's PuntPort and
answers commands on stdin (expect, quiet, reinject, bounce, serve). The punt rule is an
ordinary `tc` rule here: the compiler's punt rule matches ct_state +trk+new in an
adjacency chain, but where it sits does not change the path a punted frame takes.
"""

import os
import re
import select
import socket
import subprocess
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import describe, vlans

P0_MAC = "02:dd:00:00:00:01"
P100_MAC = "02:dd:00:00:64:01"     # p0.100's own MAC, as on a hypervisor
HOST_MAC = "02:00:00:00:01:02"     # 10.100.0.2 on VLAN 100, in the fabric
PUNT_PRIO = 10
REINJECT_INDEX = 0xd9200001        # lib/kernel/punt_port.hpp kReinjectIndex
PROBE_START = 30.0                 # probe start to READY (TCG is slow)
REPLY_TIMEOUT = 10.0               # a probe command's answer
ARRIVE_TIMEOUT = 5.0               # a frame that must arrive
NOTHING_WINDOW = 1.0               # "nothing arrives"
BOUNCES = 50
IP_PKTINFO = 8


class Probe:
    """punt-probe in a netns; commands on stdin, answers read line by line with a deadline."""

    def __init__(self, lab, ns, path, uplink):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, path, uplink], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.seen = []

    def line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        text = line.decode()
        self.seen.append(text)
        return text

    def until(self, prefix, timeout=REPLY_TIMEOUT):
        """Lines up to and including the first starting with `prefix` (None: it never came)."""
        out, deadline = [], time.monotonic() + timeout
        while True:
            line = self.line(max(0.0, deadline - time.monotonic()))
            if line is None:
                return out, None
            out.append(line)
            if line.startswith(prefix):
                return out, line

    def send(self, cmd):
        self.proc.stdin.write((cmd + "\n").encode())
        self.proc.stdin.flush()

    def tail(self):
        err = ""
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode()[-300:]
        return " | ".join(self.seen[-4:]) + (f" | stderr: {err}" if err else "")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def fields(line):
    return dict(re.findall(r"(\w+)=(\S+)", line or ""))


def udp_frame(payload):
    return (Ether(src=HOST_MAC, dst=P100_MAC) / Dot1Q(vlan=100) /
            IP(src="10.100.0.2", dst="10.100.0.1", ttl=64) / UDP(sport=40000, dport=9999) / Raw(payload))


def udp_wait(sock, payload, timeout):
    """(arrival ifindex) of the datagram carrying `payload` within `timeout`, else None."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.0, deadline - time.monotonic())
        if not select.select([sock], [], [], left)[0]:
            return None
        data, anc, _flags, _addr = sock.recvmsg(65535, socket.CMSG_SPACE(12))
        if data != payload:
            continue
        for level, typ, cdata in anc:
            if level == socket.IPPROTO_IP and typ == IP_PKTINFO:
                return int.from_bytes(cdata[:4], "little")
        return -1


def punt_rule(dev):
    return (f"tc filter add dev p0 ingress chain 0 prio {PUNT_PRIO} protocol 802.1Q flower vlan_id 100 "
            f"vlan_ethtype ip ip_proto udp dst_port 9999 action mirred egress redirect dev {dev}")


def run(lab):
    path = os.path.join(lab.build_dir or "", "test", "punt-probe")
    if not lab.check("punt-probe built (--build-dir)", os.access(path, os.X_OK), f"no executable {path}"):
        return
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    lab.sh_lines([f"ip link set p0 address {P0_MAC}",
                  f"ip link add link p0 name p0.100 address {P100_MAC} type vlan id 100",
                  "ip addr add 10.100.0.1/24 dev p0.100",
                  "ip link set p0.100 up",
                  f"ip neigh replace 10.100.0.2 lladdr {HOST_MAC} dev p0.100 nud permanent"], ns="hv")
    with lab.netns("hv"):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"p0.100")
        udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        udp.bind(("10.100.0.1", 9999))
    p100_ifindex = lab.link("hv", "p0.100")["ifindex"]

    probe = Probe(lab, "hv", path, "p0")
    try:
        lines, ready = probe.until("READY", PROBE_START)
        for line in lines:
            if line.startswith(("PASS ", "FAIL ")):
                verdict, _, rest = line.partition(" ")
                what, _, detail = rest.partition(": ")
                lab.check(f"punt port: {what}", verdict == "PASS", detail)
        if not lab.check("punt port opened on the real kernel (veth pair up, socket, rules)", ready, probe.tail()):
            return
        punt_dev = fields(ready)["punt_dev"]
        lab.note(ready)
        off = [lab.sh(f"cat /proc/sys/net/ipv6/conf/{d}/disable_ipv6", ns="hv").stdout.strip()
               for d in ("dpo-punt", "dpo-inject")]
        mtu = [lab.link("hv", d)["mtu"] for d in ("p0", "dpo-punt", "dpo-inject")]
        states = [lab.link("hv", d)["operstate"] for d in ("dpo-punt", "dpo-inject")]
        lab.check("dpo-punt, dpo-inject: up, IPv6 disabled, the uplink's MTU",
                  off == ["1", "1"] and mtu[1:] == [mtu[0]] * 2 and states == ["UP", "UP"],
                  f"disable_ipv6 {off}, mtu p0/punt/inject {mtu}, operstate {states}")

        lab.sh_lines(["tc qdisc add dev p0 clsact", punt_rule(punt_dev)], ns="hv")

        # 1. Punted: the probe reads the frame as it was on the wire, and the kernel never sees it.
        payload1 = b"first packet of a subscriber #1 " * 2
        sent1 = udp_frame(payload1)
        cap = lab.capture("hv", "p0.100")
        lab.send("fabric", "fab0", sent1)
        probe.send("expect 1 10")
        lines, got = probe.until("GOT")
        frames = [l for l in lines if l.startswith("FRAME ")]
        hexes = [fields(l).get("hex", "") for l in frames]
        raw = bytes.fromhex(hexes[0]) if hexes else b""
        rx = Ether(raw) if raw else None
        lab.check("punted frame read from dpo-punt with VLAN 100 and the exact payload (bytes as sent)",
                  len(frames) == 1 and raw == bytes(sent1) and vlans(rx) == [100],
                  f"{got}; {frames[0][:200] if frames else probe.tail()}"
                  + (f"; got {describe(rx)}" if rx is not None else ""))
        if frames:
            lab.note(frames[0].split(" hex=")[0])
        leaked_dev = cap.expect_none(lambda p: Raw in p and p[Raw].load == payload1, NOTHING_WINDOW)
        leaked_sock = udp_wait(udp, payload1, 0.0)
        cap.close()
        lab.check("while the punt rule is there the frame reaches neither p0.100 nor the UDP socket",
                  leaked_dev is None and leaked_sock is None,
                  f"p0.100 saw {describe(leaked_dev) if leaked_dev is not None else 'nothing'}, "
                  f"socket got it: {leaked_sock is not None}")

        # 2. Put back after the punt rule is gone: it runs p0's ingress again and 8021q hands
        #    it to p0.100, as if it had just come in from the wire.
        lab.sh(f"tc filter del dev p0 ingress prio {PUNT_PRIO}", ns="hv")
        cap = lab.capture("hv", "p0.100")
        probe.send("reinject")
        lines, done = probe.until("DONE")
        rein = next((l for l in lines if l.startswith("REINJECTED")), None)
        lab.check("probe re-injected the held frame", done == "DONE 1", " | ".join(lines) or probe.tail())
        at = udp_wait(udp, payload1, ARRIVE_TIMEOUT)
        seen = cap.expect(lambda p: Raw in p and p[Raw].load == payload1, ARRIVE_TIMEOUT)
        cap.close()
        lab.check("re-injected frame arrives in hv on p0.100 (8021q demuxed it by its tag): "
                  "UDP socket bound to p0.100 gets the payload",
                  at == p100_ifindex and seen is not None and vlans(seen) == [],
                  f"socket: {'nothing' if at is None else f'ifindex {at} (p0.100 is {p100_ifindex})'}; "
                  f"p0.100 capture: {describe(seen) if seen is not None else 'nothing'}")
        probe.send("quiet 1")
        _, quiet = probe.until("QUIET")
        lab.check("the probe does not read back what it wrote", quiet == "QUIET 0", quiet or probe.tail())
        if rein:
            lab.note(f"re-inject call {fields(rein).get('call_us')} us "
                     f"(held {float(fields(rein).get('since_receive_us', 0)) / 1000:.0f} ms for the scenario)")

        # 3. Latency: with the punt rule back, the frame goes round uplink ingress -> punt ->
        #    probe -> re-inject -> uplink ingress -> punt ... and must come back identical each time.
        lab.sh(punt_rule(punt_dev), ns="hv")
        payload2 = b"bouncing frame, tag must survive" * 2
        lab.send("fabric", "fab0", udp_frame(payload2))
        probe.send("expect 1 10")
        _, got = probe.until("GOT")
        probe.send(f"bounce {BOUNCES}")
        _, bounce = probe.until("BOUNCE", 60)
        b = fields(bounce)
        lab.check(f"re-injected {BOUNCES} times, punted again and read back byte-identical every time (VLAN tag kept)",
                  got == "GOT 1" and b.get("back") == str(BOUNCES) and b.get("identical") == str(BOUNCES),
                  f"{got}; {bounce or probe.tail()}")
        if bounce:
            lab.note(f"one punt round trip (re-inject -> p0 ingress chain 0 -> punt -> read), median/p90/max: "
                     f"{b.get('cycle_us')} us; re-inject call alone {b.get('call_us')} us (TCG, 2 vCPUs)")

        # 4. The daemon's path: read the punted frame, install the subscriber's rule ahead of
        #    the punt rule, write the frame back; it is delivered, not punted again.
        payload3 = b"first packet, rule installed then" * 2
        lab.send("fabric", "fab0", udp_frame(payload3))
        probe.send("serve 10.100.0.2 100 10")
        _, served = probe.until("SERVED")
        s = fields(served)
        at = udp_wait(udp, payload3, ARRIVE_TIMEOUT)
        probe.send("quiet 1")
        _, quiet = probe.until("QUIET")
        lab.check("serve: punted, rule installed, re-injected -> delivered on p0.100 and not punted again",
                  served is not None and s.get("refused") == "0" and "error" not in s and at == p100_ifindex
                  and quiet == "QUIET 0",
                  f"{served or probe.tail()}; socket {'nothing' if at is None else f'ifindex {at}'}; {quiet}")
        if served:
            lab.note(f"read -> rule installed {s.get('install_us')} us -> re-injected {s.get('reinject_us')} us: "
                     f"{s.get('total_us')} us added by the daemon")

        # 5. Every frame written back went through dpo-inject's shared mirred action.
        out = lab.sh(f"tc -s actions get action mirred index {REINJECT_INDEX}", ns="hv").stdout
        m = re.search(r"Sent \d+ bytes (\d+) pkt", out)
        want = 1 + BOUNCES + 1
        lab.check(f"dpo-inject's mirred ingress redirect (index {REINJECT_INDEX:#x}) counted every re-injected "
                  f"frame ({want})", m is not None and int(m.group(1)) == want, " ".join(out.split())[:300])
        probe.send("lost")
        _, lost = probe.until("LOST")
        lab.check("no punted frame lost (socket queue, truncation)", lost == "LOST 0", lost or probe.tail())
    finally:
        probe.close()
        udp.close()

#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Captures real netlink messages for the seed corpora of fuzz/ from the lab's kernel.

Run in the lab guest (it writes nothing: the guest's view of the tree is read-only);
it prints one `SEED <harness> <name> <hex>` line per datagram, which fuzz/capture_seeds.sh
writes into fuzz/corpus/<harness>/:

  flock /tmp/lab.lock fuzz/capture_seeds.sh build      # needs build/test/tc-probe

- tc_filter: the rules tc-probe installs (every action and key shape the daemon writes:
  ct, NAT, pedit, csum, vlan, tunnel_key, mirred, gact, decap keys) plus one foreign
  rule, as the kernel dumps them (full and terse) and as it notifies them (RTNLGRP_TC).
- conntrack: NEW and DESTROY events of connections made with `conntrack -I` in zone 1
  and 0 (TCP, UDP, ICMP with a translated reply, IPv6), as the event socket reads them.
"""

import os
import socket
import struct
import subprocess
import sys
import time

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETTFILTER = 46
RTNLGRP_TC = 4
TCA_DUMP_FLAGS, TCA_DUMP_FLAGS_TERSE = 15, 1
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY = 1, 3
CLSACT_INGRESS = 0xFFFFFFF2


def emit(harness, name, data):
    print(f"SEED {harness} {name} {data.hex()}", flush=True)


def sh(cmd, check=True):
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and p.returncode:
        raise SystemExit(f"capture: {cmd}: {p.stderr.strip()}")
    return p


def messages(datagram):
    off = 0
    while off + 16 <= len(datagram):
        length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", datagram, off)
        if length < 16 or off + length > len(datagram):
            break
        yield mtype, datagram[off:off + length]
        off += (length + 3) & ~3


def receive_all(sock, quiet=0.5):
    out = []
    sock.settimeout(quiet)
    try:
        while True:
            out.append(sock.recv(1 << 20))
    except (socket.timeout, BlockingIOError):
        pass
    return out


def dump_filters(ifindex, terse):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    attrs = b""
    if terse:  # NLA_BITFIELD32: value, selector
        attrs = struct.pack("=HHII", 12, TCA_DUMP_FLAGS, TCA_DUMP_FLAGS_TERSE, TCA_DUMP_FLAGS_TERSE)
    tcm = struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, 0, CLSACT_INGRESS, 0)
    body = tcm + attrs
    s.send(struct.pack("=IHHII", 16 + len(body), RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
    got = []
    done = False
    while not done:
        d = s.recv(1 << 20)
        for mtype, m in messages(d):
            if mtype == 3:  # NLMSG_DONE
                done = True
            elif mtype == 2:
                raise SystemExit("capture: filter dump refused")
            else:
                got.append(m)
    s.close()
    return got


def tc_seeds(build_dir):
    probe = os.path.join(build_dir, "test", "tc-probe")
    sh("ip link add p0 type veth peer name fab0 && ip link set p0 up && ip link set fab0 up")
    sh("ip link add vxlan0 type vxlan external dstport 4789 && ip link set vxlan0 up")
    listen = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    listen.bind((0, 1 << (RTNLGRP_TC - 1)))
    for kind, dev in (("vlan", "p0"), ("vxlan", "vxlan0")):
        p = sh(f"{probe} {kind} {dev}", check=False)
        print(f"# tc-probe {kind} {dev}: exit {p.returncode}", flush=True)
    # A rule the daemon did not write: keys and actions it does not know.
    sh("tc filter add dev p0 ingress protocol ip prio 500 flower ip_proto tcp dst_port 80 "
       "action police rate 1mbit burst 10k conform-exceed drop/pipe action drop")
    n = 0
    for d in receive_all(listen):
        emit("tc_filter", f"notify-{n:03d}", d)
        n += 1
    for dev in ("p0", "vxlan0"):
        ifindex = socket.if_nametoindex(dev)
        for terse in (False, True):
            for i, m in enumerate(dump_filters(ifindex, terse)):
                emit("tc_filter", f"dump-{dev}-{'terse' if terse else 'full'}-{i:03d}", m)


def ct_seeds():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((0, (1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1))))
    conns = [
        # A subscriber's TCP connection, source-NATed to 198.51.100.1:1030, zone 1.
        "-p tcp -s 10.100.0.2 -d 203.0.113.9 --sport 40000 --dport 80 "
        "-r 203.0.113.9 -q 198.51.100.1 --reply-port-src 80 --reply-port-dst 1030 "
        "--state ESTABLISHED -u SEEN_REPLY -t 120 -w 1",
        "-p udp -s 10.100.0.3 -d 203.0.113.53 --sport 5353 --dport 53 "
        "-r 203.0.113.53 -q 198.51.100.1 --reply-port-src 53 --reply-port-dst 1031 -t 30 -w 1",
        # Not translated, zone 0 (the daemon ignores it), and IPv6.
        "-p tcp -s 192.0.2.1 -d 192.0.2.2 --sport 1 --dport 2 --state SYN_SENT -t 30",
        "-p tcp -s fd00:100::2 -d 2001:db8::1 --sport 40001 --dport 443 --state ESTABLISHED -t 60 -w 1",
    ]
    for c in conns:
        p = sh(f"conntrack -I {c}", check=False)
        print(f"# conntrack -I {c}: {p.returncode} {p.stderr.strip()[:120]}", flush=True)
    # ICMP echo (its id is what NAT translates; the reply tuple's is read from the raw
    # message): real packets on lo, committed to zone 1 by tc ct, one source-NATed.
    sh("ip link set lo up && tc qdisc add dev lo clsact")
    sh("tc filter add dev lo egress protocol ip prio 1 flower ip_proto icmp dst_ip 127.0.0.2 "
       "action ct commit zone 1 nat src addr 198.51.100.1 pipe action pass")
    sh("tc filter add dev lo egress protocol ip prio 2 flower ip_proto icmp "
       "action ct commit zone 1 pipe action pass")
    sh("tc filter add dev lo egress protocol ipv6 prio 3 flower ip_proto icmpv6 "
       "action ct commit zone 1 pipe action pass")
    for family, dst, proto, echo in ((socket.AF_INET, "127.0.0.2", socket.IPPROTO_ICMP, 8),
                                     (socket.AF_INET, "127.0.0.1", socket.IPPROTO_ICMP, 8),
                                     (socket.AF_INET6, "::1", socket.IPPROTO_ICMPV6, 128)):
        with socket.socket(family, socket.SOCK_RAW, proto) as icmp:
            body = struct.pack("!BBHHH", echo, 0, 0, 0x1234, 1) + b"dpo"
            if family == socket.AF_INET:  # IPv4 raw sockets leave the checksum to us
                words = struct.unpack("!%dH" % (len(body + b"\0") // 2), body + b"\0")
                c = sum(words)
                c = (c & 0xffff) + (c >> 16)
                c = ~((c & 0xffff) + (c >> 16)) & 0xffff
                body = body[:2] + struct.pack("!H", c) + body[4:]
            icmp.sendto(body, (dst, 0))
    time.sleep(0.3)
    sh("conntrack -D -w 1", check=False)
    sh("conntrack -D", check=False)
    for n, d in enumerate(receive_all(s)):
        emit("conntrack", f"event-{n:03d}", d)


def main():
    if sys.argv[1] == "--phase":  # in the namespace made for it
        {"tc": lambda: tc_seeds(sys.argv[3]), "ct": ct_seeds}[sys.argv[2]]()
        return
    build_dir = sys.argv[1]
    for phase in ("tc", "ct"):
        ns = f"seed-{phase}"
        sh(f"ip netns add {ns}")
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                        "--phase", phase, build_dir], check=False)
        sh(f"ip netns del {ns}")
    time.sleep(0.1)


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: GPL-2.0-or-later
"""Slow path only (no daemon): the kernel routes between VLAN sub-interfaces of the uplink.

    fabric netns                      hv netns (the hypervisor)
    fab0  <------------ veth ------------>  p0
    (scapy sends and captures)              +- p0.100  10.100.0.1/24  fd00:100::1/64
                                            +- p0.200  10.200.0.1/24  fd00:200::1/64

Fabric hosts are static neighbours: 10.100.0.2 / fd00:100::2 = 02:00:00:00:01:02 on
VLAN 100, 10.200.0.2 / fd00:200::2 = 02:00:00:00:02:02 on VLAN 200. This is the
behaviour the fast path must reproduce, and what it must leave to the kernel.
"""

from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6TimeExceeded, IPv6, IPerror6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from labkit import describe, ipv4_checksum_ok, payload_is, vlans

HOST100_MAC = "02:00:00:00:01:02"
HOST200_MAC = "02:00:00:00:02:02"


def setup(lab):
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    for vid, v4, v6, host4, host6, mac in (
            (100, "10.100.0.1/24", "fd00:100::1/64", "10.100.0.2", "fd00:100::2", HOST100_MAC),
            (200, "10.200.0.1/24", "fd00:200::1/64", "10.200.0.2", "fd00:200::2", HOST200_MAC)):
        lab.vlan_device("hv", "p0", vid, v4, v6, [(host4, mac), (host6, mac)])
    lab.sysctl("hv", "net.ipv4.ip_forward", 1)
    lab.sysctl("hv", "net.ipv6.conf.all.forwarding", 1)
    # The fabric end is a wire: no addresses, no IPv6 chatter of its own.
    lab.sysctl("fabric", "net.ipv6.conf.fab0.disable_ipv6", 1)


def forward_check(lab, name, p0_mac, vid_in, vid_out, out_mac, src_ip, dst_ip, sport, v6=False):
    """Send a UDP packet from the fabric on VLAN vid_in; expect it routed back on vid_out."""
    payload = f"dpo-lab {name}".encode()
    l3 = (IPv6(src=src_ip, dst=dst_ip, hlim=64) if v6 else IP(src=src_ip, dst=dst_ip, ttl=64))
    frame = (Ether(src=HOST100_MAC if vid_in == 100 else HOST200_MAC, dst=p0_mac)
             / Dot1Q(vlan=vid_in) / l3 / UDP(sport=sport, dport=5001) / payload)
    sent = Ether(bytes(frame))
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0", payload_is(payload))
    if got is None:
        return lab.check(name, False, f"no routed frame on fab0 within the timeout; {cap.others_summary()}")
    if v6:
        hop = ("hop limit", got[IPv6].hlim, 63)
        addrs = [("src ip", got[IPv6].src, src_ip), ("dst ip", got[IPv6].dst, dst_ip)]
    else:
        hop = ("ttl", got[IP].ttl, 63)
        addrs = [("src ip", got[IP].src, src_ip), ("dst ip", got[IP].dst, dst_ip),
                 ("ipv4 checksum valid", ipv4_checksum_ok(got), True)]
    bad = lab.mismatches([
        ("vlans", vlans(got), [vid_out]),
        ("dst mac", got.dst, out_mac),
        ("src mac", got.src, p0_mac),
        hop, *addrs,
        ("udp checksum", got[UDP].chksum, sent[UDP].chksum),
        ("payload", got[Raw].load, payload),
    ])
    return lab.check(name, not bad, f"{bad} in {describe(got)}")


def run(lab):
    setup(lab)
    p0_mac = lab.mac("hv", "p0")
    p0_200_mac = lab.mac("hv", "p0.200")
    p0_100_mac = lab.mac("hv", "p0.100")
    fab0_mac = lab.mac("fabric", "fab0")

    # 0. The capture itself: a frame the hypervisor sends with VLAN 300 must show VLAN 300.
    marker = b"dpo-lab vlan tag seen"
    frame = (Ether(src=p0_mac, dst=fab0_mac) / Dot1Q(vlan=300)
             / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=7, dport=7) / marker)
    got, cap = lab.send_expect("hv", "p0", frame, "fabric", "fab0", payload_is(marker))
    lab.check("capture shows the 802.1Q tag (vid 300 sent on p0, seen on fab0)",
              got is not None and vlans(got) == [300],
              describe(got) if got is not None else f"frame not seen; {cap.others_summary()}")

    # 1-3. Routed between VLANs: re-tagged, MACs rewritten, TTL / hop limit decremented.
    forward_check(lab, "ipv4 vlan 100 -> vlan 200 routed (vid, macs, ttl 63, payload)",
                  p0_200_mac, 100, 200, HOST200_MAC, "10.100.0.2", "10.200.0.2", 40001)
    forward_check(lab, "ipv4 vlan 200 -> vlan 100 routed (reverse)",
                  p0_100_mac, 200, 100, HOST100_MAC, "10.200.0.2", "10.100.0.2", 40002)
    forward_check(lab, "ipv6 vlan 100 -> vlan 200 routed (vid, macs, hop limit 63, payload)",
                  p0_200_mac, 100, 200, HOST200_MAC, "fd00:100::2", "fd00:200::2", 40003, v6=True)

    # 4-5. TTL 1: not forwarded; the router answers ICMP time exceeded on the ingress VLAN.
    payload = b"dpo-lab ttl 1"
    frame = (Ether(src=HOST100_MAC, dst=p0_mac) / Dot1Q(vlan=100)
             / IP(src="10.100.0.2", dst="10.200.0.2", ttl=1) / UDP(sport=40004, dport=5001) / payload)
    cap = lab.capture("fabric", "fab0")
    lab.send("fabric", "fab0", frame)
    icmp = cap.expect(lambda p: ICMP in p and p[ICMP].type == 11 and UDPerror in p
                      and p[UDPerror].sport == 40004)
    if icmp is None:
        lab.check("ipv4 ttl 1 -> icmp time exceeded back on vlan 100", False,
                  f"no ICMP time exceeded seen; {cap.others_summary()}")
    else:
        bad = lab.mismatches([
            ("vlans", vlans(icmp), [100]), ("dst mac", icmp.dst, HOST100_MAC),
            ("src ip", icmp[IP].src, "10.100.0.1"), ("dst ip", icmp[IP].dst, "10.100.0.2"),
            ("icmp code", icmp[ICMP].code, 0), ("quoted dst", icmp[IPerror].dst, "10.200.0.2")])
        lab.check("ipv4 ttl 1 -> icmp time exceeded back on vlan 100", not bad, f"{bad} in {describe(icmp)}")
    leaked = [p for p in cap.others if payload_is(payload)(p)]
    leaked = leaked[0] if leaked else cap.expect_none(payload_is(payload), window=1.0)
    cap.close()
    lab.check("ipv4 ttl 1 not forwarded (1 s window)", leaked is None,
              f"forwarded anyway: {describe(leaked)}" if leaked is not None else "")

    payload = b"dpo-lab hlim 1"
    frame = (Ether(src=HOST100_MAC, dst=p0_mac) / Dot1Q(vlan=100)
             / IPv6(src="fd00:100::2", dst="fd00:200::2", hlim=1) / UDP(sport=40005, dport=5001) / payload)
    got, cap = lab.send_expect("fabric", "fab0", frame, "fabric", "fab0",
                               lambda p: ICMPv6TimeExceeded in p and IPerror6 in p
                               and UDPerror in p and p[UDPerror].sport == 40005)
    if got is None:
        lab.check("ipv6 hop limit 1 -> icmpv6 time exceeded back on vlan 100", False,
                  f"none seen; {cap.others_summary()}")
    else:
        bad = lab.mismatches([
            ("vlans", vlans(got), [100]), ("dst mac", got.dst, HOST100_MAC),
            ("src ip", got[IPv6].src, "fd00:100::1"), ("dst ip", got[IPv6].dst, "fd00:100::2")])
        lab.check("ipv6 hop limit 1 -> icmpv6 time exceeded back on vlan 100", not bad,
                  f"{bad} in {describe(got)}")

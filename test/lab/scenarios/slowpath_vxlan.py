# SPDX-License-Identifier: GPL-2.0-or-later
"""Slow path only (no daemon): the kernel alone routes between VLAN, EVPN and Cisco ACI
interfaces with Linux's single-VXLAN-device layout (test/lab/vxlan_hypervisor.py).

    fab0 (scapy) <-- veth --> p0 (hv): untagged EVPN underlay 10.0.1.1, p0.2 ACI underlay
    10.0.2.1, p0.100 blue, p0.200 transit; vxlan0 (external vnifilter) in br0 with
    svi-green (VNI 5001, EVPN), svi-web (VNI 6001, ACI), svi-other (VNI 7001, EVPN).

Forwarding is on (ip_forward=1, IPv6 all.forwarding=1). Every forwarded frame is checked
field by field on fab0: outer VLAN, outer MACs, outer IPs, UDP port 4789, VXLAN flags and
VNI, inner MACs, inner addresses, TTL / hop limit, UDP checksum and payload. Outer TTL,
outer UDP source port and checksum are notes. This is the behaviour the fast path copies
(scenario fastpath_vxlan) and what it leaves to the kernel.
"""

import time

import vxlan_hypervisor as vh
from labkit import describe

NOTHING_WINDOW = 1.0


def check_single_device(lab, hv):
    devs = hv.vxlan_devices
    lab.check(f"one VXLAN device in hv, metadata mode with vnifilter, port 4789 ({devs}); UDP 4789 bound by "
              f"it alone: {hv.udp_binders}",
              devs == [("vxlan0", 4789, True, True)] and set(hv.udp_binders) <= {"0.0.0.0:4789", "[::]:4789"},
              f"devices {devs}, sockets {hv.udp_binders}")
    # A second, per-VNI device on the same port cannot come up beside it.
    lab.sh("ip link add vxprobe type vxlan id 4242 dstport 4789 local 10.0.1.1 nolearning", ns="hv")
    r = lab.sh("ip link set vxprobe up", ns="hv", check=False)
    lab.sh("ip link del vxprobe", ns="hv", check=False)
    lab.check("a second (per-VNI) VXLAN device on UDP 4789 cannot come up beside vxlan0 "
              f"({r.stderr.strip() or 'it came up'})", r.returncode != 0 and "in use" in r.stderr,
              f"exit {r.returncode}: {r.stderr.strip()}")


def check_unknown_vni(lab):
    payload = b"dpo-slow vni 9999"
    frame = vh.host_frame("green", "10.100.0.2", 40020, payload, vni=9999)
    inside = lab.capture("hv", "vxlan0")
    wire = lab.capture(vh.FAB_NS, vh.FAB_DEV)
    try:
        lab.send(vh.FAB_NS, vh.FAB_DEV, frame)
        leaked = wire.expect_none(vh.payload_match(payload), window=NOTHING_WINDOW)
        seen = inside.expect_none(vh.payload_match(payload), window=0.0)
    finally:
        inside.close()
        wire.close()
    lab.check(f"unknown VNI 9999 over EVPN goes nowhere ({NOTHING_WINDOW:.0f} s window on fab0)", leaked is None,
              f"forwarded: {vh.describe_wire(leaked)}" if leaked is not None else "")
    lab.check("unknown VNI 9999 never reaches vxlan0 (the vnifilter socket drops it)", seen is None,
              f"seen on vxlan0: {describe(seen)}" if seen is not None else "")


def check_ttl1(lab):
    """Inner TTL 1 over EVPN: not forwarded; ICMP time exceeded goes back encapsulated."""
    payload = b"dpo-slow evpn ttl 1"
    frame = vh.host_frame("green", "10.100.0.2", 40030, payload, ttl=1)
    cap = lab.capture(vh.FAB_NS, vh.FAB_DEV)
    try:
        lab.send(vh.FAB_NS, vh.FAB_DEV, frame)
        icmp = vh.time_exceeded(cap, frame)
        vh.time_exceeded_check(lab, "evpn inner ttl 1 -> icmp time exceeded from 10.1.0.1, encapsulated to 10.0.1.2 "
                                    "vni 5001 (outer macs/ips/port/vni, inner macs, quoted ttl 1)",
                               icmp, cap.others_summary(), frame, "green")
        if icmp is not None:
            lab.note(f"icmp time exceeded (kernel, encapsulated): {vh.outer_note(icmp)}, inner ttl "
                     f"{vh.decode(icmp)['ttl']}")
        leaked = [p for p in cap.others if vh.payload_match(payload)(p)]
        leaked = leaked[0] if leaked else cap.expect_none(vh.payload_match(payload), window=NOTHING_WINDOW)
    finally:
        cap.close()
    lab.check(f"evpn inner ttl 1 not forwarded ({NOTHING_WINDOW:.0f} s window)", leaked is None,
              f"forwarded anyway: {vh.describe_wire(leaked)}" if leaked is not None else "")


def run(lab):
    t0 = time.monotonic()
    hv = vh.build(lab)
    vh.forwarding(lab, 1)
    lab.note(f"topology built in {time.monotonic() - t0:.1f} s")
    failed0 = lab.failed
    check_single_device(lab, hv)

    notes = []
    vh.forward_check(lab, "evpn vni 5001 in (10.1.0.2 -> 10.100.0.2) -> vlan 100 out (vid, host mac, p0.100 mac, "
                     "ttl 63, udp csum, payload)",
                     vh.host_frame("green", "10.100.0.2", 40001, b"dpo-slow evpn->vlan"), "blue", notes=notes)
    vh.forward_check(lab, "vlan 100 in (10.100.0.2 -> 10.2.0.2) -> aci out (outer vlan 2, p0.2 mac -> vtep mac, "
                     "10.0.2.1 -> 10.0.2.10, udp 4789, vni 6001, inner macs, ttl 63)",
                     vh.host_frame("blue", "10.2.0.2", 40002, b"dpo-slow vlan->aci"), "web", notes=notes)
    vh.forward_check(lab, "aci vni 6001 in (10.2.0.2 -> 10.1.0.2) -> evpn out (untagged, p0 mac -> vtep mac, "
                     "10.0.1.1 -> 10.0.1.2, udp 4789, vni 5001, inner macs, ttl 63)",
                     vh.host_frame("web", "10.1.0.2", 40003, b"dpo-slow aci->evpn"), "green", notes=notes)
    vh.forward_check(lab, "ipv6 evpn in (fd00:5001::2 -> fd00:100::2) -> vlan 100 out (hop limit 63)",
                     vh.host_frame("green", "fd00:100::2", 40004, b"dpo-slow v6 evpn->vlan"), "blue", notes=notes)
    vh.forward_check(lab, "ipv6 vlan 100 in (fd00:100::2 -> fd00:6001::2) -> aci out (outer v4 10.0.2.1 -> "
                     "10.0.2.10, vni 6001, hop limit 63)",
                     vh.host_frame("blue", "fd00:6001::2", 40005, b"dpo-slow v6 vlan->aci"), "web", notes=notes)
    vh.forward_check(lab, "evpn vni 7001 in (svi-other, 10.3.0.2 -> 10.100.0.2) -> vlan 100 out, routed by the kernel",
                     vh.host_frame("other", "10.100.0.2", 40006, b"dpo-slow vni 7001"), "blue", notes=notes)
    vh.forward_check(lab, "vlan 100 in (10.100.0.2 -> 10.3.0.2) -> evpn vni 7001 out (to 10.0.1.2)",
                     vh.host_frame("blue", "10.3.0.2", 40007, b"dpo-slow vlan->vni 7001"), "other", notes=notes)
    for what, n in notes:
        lab.note(f"kernel encapsulation, {what}: {n}")
    lab.note(f"vxlan0: {vh.vxlan_info.get('vxlan0')}")
    check_unknown_vni(lab)
    check_ttl1(lab)
    if lab.failed > failed0:
        for line in vh.state_dump(lab):
            print(f"  | {line}", flush=True)

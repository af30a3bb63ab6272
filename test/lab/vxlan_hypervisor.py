# SPDX-License-Identifier: GPL-2.0-or-later
"""A hypervisor whose kernel alone forwards VLAN, EVPN and Cisco ACI traffic: the topology of
the lab scenarios slowpath_vxlan, fastpath_vxlan and fastpath_vxlan_alt, and the frame, check
and tc helpers they share.

    netns fab                          netns hv (the hypervisor)
    fab0 <-------- veth --------> p0   02:dd:00:00:00:01  10.0.1.1/24 fd00:1::1/64  EVPN underlay
    (scapy sends and captures)     |     remote EVPN VTEP 10.0.1.2 = 02:fa:00:00:01:02 (static)
                                   +- p0.2    ACI infra VLAN 2   02:dd:00:00:02:01  10.0.2.1/24
                                   |     remote ACI VTEP 10.0.2.10 = 02:fa:00:00:02:0a (static)
                                   +- p0.100  blue, VLAN 100     02:dd:00:00:64:01  10.100.0.1/24 fd00:100::1/64
                                   |     host 10.100.0.2 / fd00:100::2 = 02:00:00:00:01:02
                                   +- p0.200  transit, VLAN 200  02:dd:00:00:c8:01  10.200.0.1/24 fd00:200::1/64
                                   |     gateway 10.200.0.254 / fd00:200::fe = 02:00:00:00:c8:fe,
                                   |     default routes (v4, v6) via it
    vxlan0: ONE metadata-mode device (`external vnifilter nolearning`, dstport 4789, no
            `local`: the outer source is the address of the route to the remote VTEP), port of
    br0:    a VLAN-aware bridge (vlan_filtering 1, vlan_default_pvid 0), vxlan0 with
            vlan_tunnel on and learning off; bridge VLAN <-> VNI: 10 <-> 5001, 20 <-> 6001,
            30 <-> 7001 (tunnel_info + `bridge vni add`)
       svi-green  br0.10  VNI 5001 EVPN  02:dd:00:00:13:89  10.1.0.1/24 fd00:5001::1/64
                  host 10.1.0.2 / fd00:5001::2 = 02:00:00:00:50:02 behind VTEP 10.0.1.2
       svi-web    br0.20  VNI 6001 ACI   02:dd:00:00:17:71  10.2.0.1/24 fd00:6001::1/64
                  host 10.2.0.2 / fd00:6001::2 = 02:00:00:00:60:02 behind VTEP 10.0.2.10
       svi-other  br0.30  VNI 7001 EVPN  02:dd:00:00:1b:59  10.3.0.1/24
                  host 10.3.0.2 = 02:00:00:00:70:02 behind VTEP 10.0.1.2 (not in the
                  daemon's mapping: the kernel's own)

Remote hosts are what FRR would learn over BGP EVPN, written statically: a permanent
neighbour on the SVI, a bridge fdb entry (`master`, on the bridge VLAN, port vxlan0) and a
vxlan fdb entry (`self`, src_vni = the VNI, dst = the remote VTEP) so the kernel
encapsulates toward the right VTEP with the right VNI. Each SVI's own MAC is a local
bridge fdb entry on its VLAN (what ifupdown2 adds for an SVI whose MAC is not the
bridge's), so frames to it go up to the bridge without flooding.

Changes to the plan the kernel forced (6.1):
- br0 is created with `vlan_default_pvid 0` (no implicit VLAN 1) and a fixed MAC
  02:dd:00:00:0b:00, so its MAC does not follow its ports; br0 and vxlan0 get
  `addrgenmode none` so neither sends IPv6 link-local chatter of its own.
- br0 has `forward_delay 0` (STP is off): with the default 15 s the bridge sends an
  RTM_NEWLINK of family AF_BRIDGE for vxlan0 exactly forward_delay after br0 comes up
  (seen on 6.1: 15 s, or 2 s with forward_delay 200), i.e. at a random moment of a
  scenario; with 0 it comes while the topology is built, before any daemon runs.
- VXLAN frames from the fabric carry VXLAN flags 0x08 (I bit only): scapy's default
  flags also set the GPE "next protocol" bit, which a non-GPE Linux device drops.
- VLAN offloads (rxvlan/txvlan) are off on p0 and fab0, and so is p0's TX checksum
  offload: a veth hands a CHECKSUM_PARTIAL packet to its peer unfinished, so the outer
  UDP checksum the kernel's VXLAN encapsulation leaves for "hardware" would read as
  invalid on fab0 (it is only the pseudo-header sum).

Other numbers: `Topology(...)` describes a hypervisor (uplink, VXLAN device and bridge names,
MACs, ACI infra VLAN, `fabrics` = underlays (fabric(): IPv4 or IPv6, on the uplink or on
its infra VLAN device), `segments` (segment()), default and extra routes via a segment's
host); `DEFAULT` is the fixture above, and the module-level build() and helpers below use it.
A Topology has its own build(), host_frame(), vxlan_frame(), egress_wire(), routed(),
forward_check(), nothing_check(), state_dump() and move_to_fabric() (segments to another
underlay). Outer IPv6 VXLAN frames are built and decoded like IPv4 ones.

Shared helpers: frame builders (inner_packet, vlan_frame, evpn_frame, aci_frame,
host_frame), decode() (every field a check compares, outer VLAN from PACKET_AUXDATA as
labkit restores it), routed()/egress_wire() (what a frame routed out of a segment must
look like) and mismatches(), forward_check() and nothing_check(), time_exceeded() and
time_exceeded_check() (inner TTL 1 answered by the router, encapsulated).

For the fast path scenarios (the daemon's rules): pipeline.hpp's chain, prio and action index
numbers; Rule (one filter of `tc -s filter show`), rules(), action_pkts(), decap_rules() and
decap_mismatches(), counter_deltas(), reconciled_check(), forwarding_off_check(),
daemon_flush(); on a Topology, nat_first_check() (a subscriber's first packet: punted,
chunk, translated), dropped_check() (unsolicited traffic dropped and counted) and trace().

Only one device binds UDP 4789 in hv: vxlan0 (its IPv4 and IPv6 sockets). A VNI that is
not in vxlan0's vnifilter list (9999) is dropped by the VXLAN socket: it never reaches
vxlan0, so neither the kernel nor tc on vxlan0 sees it.
"""

import json
import re
import time
import types

from scapy.layers.inet import IP, TCP, UDP, ICMP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from labkit import ipv4_checksum_ok, parse_log_line

VXLAN_PORT = 4789
VXLAN_FLAGS_I = 0x08          # the only flag a non-GPE VXLAN frame carries
OUTER_SPORT = 49152           # outer UDP source port of the frames the fabric sends

HV_NS = "hv"
FAB_NS = "fab"
FAB_DEV = "fab0"
UPLINK = "p0"
VXLAN_DEV = "vxlan0"
BRIDGE = "br0"
BRIDGE_MAC = "02:dd:00:00:0b:00"
P0_MAC = "02:dd:00:00:00:01"


def fabric(name, dev, vlans, mac, local_cidr, remote, remote_mac, local6_cidr=None):
    """A VXLAN underlay: the hypervisor's VTEP (`local_cidr` on `dev`, tagged `vlans` on the wire,
    source MAC `mac`) and the remote VTEP it talks to (`remote` = `remote_mac`, a static
    neighbour on `dev`). IPv4 or IPv6 by the address. local6_cidr: an extra IPv6 address on dev."""
    return types.SimpleNamespace(name=name, dev=dev, vlans=list(vlans), mac=mac, local=local_cidr.split("/")[0],
                                 local_cidr=local_cidr, local6_cidr=local6_cidr, remote=remote,
                                 remote_mac=remote_mac)


# The two fabrics: where a VTEP's frames come from and go to on the wire.
FABRICS = {
    "evpn": fabric("evpn", "p0", [], P0_MAC, "10.0.1.1/24", "10.0.1.2", "02:fa:00:00:01:02",
                   local6_cidr="fd00:1::1/64"),
    "aci": fabric("aci", "p0.2", [2], "02:dd:00:00:02:01", "10.0.2.1/24", "10.0.2.10", "02:fa:00:00:02:0a"),
}
ACI_VLAN = 2


def _seg(name, netdev, kind, mac, v4, v6, host4, host6, host_mac, vid=None, vni=None, fabric=None):
    return types.SimpleNamespace(
        name=name, netdev=netdev, kind=kind, mac=mac, vid=vid, vni=vni, fabric=fabric,
        v4=v4, v6=v6, addr4=v4.split("/")[0], addr6=v6.split("/")[0] if v6 else None,
        host4=host4, host6=host6, host_mac=host_mac)


segment = _seg

# The hypervisor's L3 interfaces toward hosts. kind "vlan": vid is the wire VLAN on p0;
# kind "vxlan": vid is the bridge VLAN of the SVI, vni the VNI, fabric "evpn" or "aci".
SEGMENTS = {
    "blue": _seg("blue", "p0.100", "vlan", "02:dd:00:00:64:01", "10.100.0.1/24", "fd00:100::1/64",
                 "10.100.0.2", "fd00:100::2", "02:00:00:00:01:02", vid=100),
    "transit": _seg("transit", "p0.200", "vlan", "02:dd:00:00:c8:01", "10.200.0.1/24", "fd00:200::1/64",
                    "10.200.0.254", "fd00:200::fe", "02:00:00:00:c8:fe", vid=200),
    "green": _seg("green", "svi-green", "vxlan", "02:dd:00:00:13:89", "10.1.0.1/24", "fd00:5001::1/64",
                  "10.1.0.2", "fd00:5001::2", "02:00:00:00:50:02", vid=10, vni=5001, fabric="evpn"),
    "web": _seg("web", "svi-web", "vxlan", "02:dd:00:00:17:71", "10.2.0.1/24", "fd00:6001::1/64",
                "10.2.0.2", "fd00:6001::2", "02:00:00:00:60:02", vid=20, vni=6001, fabric="aci"),
    "other": _seg("other", "svi-other", "vxlan", "02:dd:00:00:1b:59", "10.3.0.1/24", None,
                  "10.3.0.2", None, "02:00:00:00:70:02", vid=30, vni=7001, fabric="evpn"),
}


# ---------------------------------------------------------------- the topology

class Topology:
    """One hypervisor: names, addresses, VLANs, VNIs and VTEPs. The defaults are the lab's
    fixture (the module docstring, used by slowpath_vxlan and fastpath_vxlan through the
    module-level functions); a scenario may build a differently numbered one.

    fabrics: {name: fabric(...)}: those on the uplink itself (EVPN, untagged; an IPv4 and
    an IPv6 underlay may share it) and those on a VLAN device of the uplink (ACI:
    dev = UPLINK.ACI_VLAN, vlans = [ACI_VLAN]). segments: {name: segment(...)}.
    default_via: the segment whose host is the default gateway (v4, and v6 if it has
    host6). routes: extra [(prefix, segment name)] via that segment's host."""

    def __init__(self, hv=HV_NS, fab=FAB_NS, fab_dev=FAB_DEV, uplink=UPLINK, uplink_mac=P0_MAC,
                 vxlan_dev=VXLAN_DEV, bridge=BRIDGE, bridge_mac=BRIDGE_MAC, port=VXLAN_PORT, aci_vlan=ACI_VLAN,
                 fabrics=None, segments=None, default_via="transit", routes=()):
        self.hv, self.fab, self.fab_dev, self.uplink, self.uplink_mac = hv, fab, fab_dev, uplink, uplink_mac
        self.vxlan_dev, self.bridge, self.bridge_mac, self.port, self.aci_vlan = (vxlan_dev, bridge, bridge_mac,
                                                                                  port, aci_vlan)
        self.fabrics = FABRICS if fabrics is None else fabrics
        self.segments = SEGMENTS if segments is None else segments
        self.default_via, self.routes = default_via, list(routes)

    # ------------------------------------------------------------ build
    def build(self, lab):
        """Build fab and hv (see the module docstring) and return a namespace naming everything.

        Kernel forwarding is left OFF (ip_forward=0, IPv6 all.forwarding=0): a scenario turns
        it on when the kernel is to forward. rp_filter is 0 everywhere in hv. The commands go
        through `ip -batch` / `bridge -batch` (process starts are slow under TCG); `commands`
        of the result lists them in order, as an operator would type them."""
        hv, fab, uplink = self.hv, self.fab, self.uplink
        lab.add_netns(hv)
        lab.add_netns(fab)
        lab.veth(uplink, hv, self.fab_dev, fab, up=False)
        lab.sysctl(fab, f"net.ipv6.conf.{self.fab_dev}.disable_ipv6", 1)   # the fabric end is a wire
        lab.sh(["ip", "link", "set", self.fab_dev, "up"], ns=fab)
        for k in ("all", "default"):
            lab.sysctl(hv, f"net.ipv4.conf.{k}.rp_filter", 0)
        lab.sysctl(hv, "net.ipv4.ip_forward", 0)
        lab.sysctl(hv, "net.ipv6.conf.all.forwarding", 0)
        done = []

        def batch(tool, cmds):
            """Run `tool -batch -` in hv with cmds (tool omitted from each), checked."""
            lab.sh([tool, "-n", hv, "-batch", "-"], input="\n".join(cmds) + "\n")
            done.extend(f"{tool} {c}" for c in cmds)

        def addr(cidr, dev):
            return f"addr add {cidr} dev {dev}" + (" nodad" if ":" in cidr else "")

        vxd, br = self.vxlan_dev, self.bridge
        vx = [s for s in self.segments.values() if s.kind == "vxlan"]
        vl = [s for s in self.segments.values() if s.kind == "vlan"]
        # The uplink, the underlays on it (EVPN), the infra VLAN devices (the ACI VTEP address
        # lives there), the VLAN interfaces; the bridge, the VXLAN device and the SVIs.
        ip1 = [f"link set {uplink} address {self.uplink_mac}",
               f"link set {uplink} up"]
        for f in self.fabrics.values():
            if f.dev != uplink:
                continue
            ip1.append(addr(f.local_cidr, uplink))
            if f.local6_cidr:
                ip1.append(addr(f.local6_cidr, uplink))
            ip1.append(f"neigh replace {f.remote} lladdr {f.remote_mac} dev {uplink} nud permanent")
        for f in self.fabrics.values():
            if f.dev == uplink:
                continue
            ip1 += [f"link add link {uplink} name {f.dev} address {f.mac} type vlan id {f.vlans[0]}",
                    f"link set {f.dev} addrgenmode none",
                    addr(f.local_cidr, f.dev),
                    f"link set {f.dev} up",
                    f"neigh replace {f.remote} lladdr {f.remote_mac} dev {f.dev} nud permanent"]
        for seg in vl:
            ip1 += [f"link add link {uplink} name {seg.netdev} address {seg.mac} type vlan id {seg.vid}",
                    f"addr add {seg.v4} dev {seg.netdev}"]
            if seg.v6:
                ip1.append(f"addr add {seg.v6} dev {seg.netdev} nodad")
            ip1 += [f"link set {seg.netdev} up",
                    f"neigh replace {seg.host4} lladdr {seg.host_mac} dev {seg.netdev} nud permanent"]
            if seg.host6:
                ip1.append(f"neigh replace {seg.host6} lladdr {seg.host_mac} dev {seg.netdev} nud permanent")
        routes = [(p, self.segments[n]) for p, n in
                  ([("default", self.default_via), ("::/0", self.default_via)] if self.default_via else [])
                  + self.routes]
        routes = [(p, s, s.host6 if p == "::/0" or ":" in p else s.host4) for p, s in routes]
        routes = [(p, s, via) for p, s, via in routes if via]
        ip1 += [f"route add {p} via {via} dev {s.netdev}" for p, s, via in routes if s.kind == "vlan"]
        ip1 += [f"link add {br} address {self.bridge_mac} type bridge vlan_filtering 1 vlan_default_pvid 0 "
                "mcast_snooping 0 forward_delay 0",
                f"link set {br} addrgenmode none",
                f"link add {vxd} type vxlan dstport {self.port} external vnifilter nolearning",
                f"link set {vxd} addrgenmode none",
                f"link set {vxd} master {br}"]
        batch("ip", ip1)
        br1 = [f"link set dev {vxd} vlan_tunnel on learning off"]
        for s in vx:
            br1 += [f"vlan add dev {br} vid {s.vid} self",
                    f"vlan add dev {vxd} vid {s.vid}",
                    f"vlan add dev {vxd} vid {s.vid} tunnel_info id {s.vni}",
                    f"vni add dev {vxd} vni {s.vni}"]
        batch("bridge", br1)
        ip2 = [f"link set {vxd} up", f"link set {br} up"]
        for s in vx:
            ip2 += [f"link add link {br} name {s.netdev} address {s.mac} type vlan id {s.vid}",
                    f"addr add {s.v4} dev {s.netdev}"]
            if s.v6:
                ip2.append(f"addr add {s.v6} dev {s.netdev} nodad")
            else:
                ip2.append(f"link set {s.netdev} addrgenmode none")
            ip2 += [f"link set {s.netdev} up",
                    f"neigh replace {s.host4} lladdr {s.host_mac} dev {s.netdev} nud permanent"]
            if s.host6:
                ip2.append(f"neigh replace {s.host6} lladdr {s.host_mac} dev {s.netdev} nud permanent")
        ip2 += [f"route add {p} via {via} dev {s.netdev}" for p, s, via in routes if s.kind == "vxlan"]
        batch("ip", ip2)
        br2 = []
        for s in vx:
            br2 += [  # the SVI's own MAC: delivered to the bridge itself on its VLAN
                    f"fdb replace {s.mac} dev {br} vlan {s.vid} self local",
                    # the remote host: bridge fdb (VLAN -> vxlan0), vxlan fdb (MAC + VNI -> VTEP)
                    f"fdb replace {s.host_mac} dev {vxd} vlan {s.vid} master static",
                    self._vxlan_fdb(s)]
        batch("bridge", br2)
        # VLAN offloads off on both ends of the wire: tags are in the bytes when sent (a capture
        # reads a received tag from PACKET_AUXDATA either way, labkit.vlans). The uplink's checksum
        # offload off too: a veth passes a CHECKSUM_PARTIAL packet on unfinished, so the outer
        # UDP checksum of an encapsulated frame would be only the pseudo-header sum on fab0.
        lab.vlan_offload(hv, uplink, False)
        lab.vlan_offload(fab, self.fab_dev, False)
        lab.sh(["ethtool", "-K", uplink, "tx", "off"], ns=hv)

        binders = udp_binders(lab, self.port, hv)
        vxdevs = vxlan_devices(lab, hv)
        if len(vxdevs) != 1 or not binders:
            raise RuntimeError(f"want exactly one VXLAN device binding UDP {self.port} in {hv}: devices "
                               f"{vxdevs}, sockets on {self.port}: {binders}")

        return types.SimpleNamespace(
            hv=hv, fab=fab, fab_dev=self.fab_dev, uplink=uplink, p0_mac=self.uplink_mac, vxlan_dev=vxd,
            bridge=br, port=self.port, aci_vlan=self.aci_vlan, fabrics=self.fabrics, segments=self.segments,
            by_vni={s.vni: s for s in vx}, vxlan_devices=vxdevs, udp_binders=binders, commands=done, topo=self)

    def _vxlan_fdb(self, s):
        return (f"fdb replace {s.host_mac} dev {self.vxlan_dev} dst {self.fabrics[s.fabric].remote} "
                f"src_vni {s.vni} vni {s.vni} self permanent")

    def move_to_fabric(self, lab, seg_names, fabric_name):
        """Put segments on another fabric (e.g. EVPN over an IPv6 underlay): the frames and
        expectations of this topology follow at once; the kernel's vxlan fdb entries of their
        hosts are pointed at that fabric's remote VTEP (`bridge fdb replace ... dst VTEP`).
        Returns (the bridge commands, their CompletedProcess): the kernel may refuse them, e.g.
        a remote of the other address family than the VXLAN device's (EAFNOSUPPORT)."""
        cmds = []
        for n in seg_names:
            s = self.segments[n]
            s.fabric = fabric_name
            cmds.append(self._vxlan_fdb(s))
        r = lab.sh(["bridge", "-n", self.hv, "-batch", "-"], input="\n".join(cmds) + "\n", check=False)
        return [f"bridge {c}" for c in cmds], r

    def state_dump(self, lab, ns=None):
        """Lines describing the slow path's state (for a failure trace)."""
        ns = ns or self.hv
        vids = [s.vid for s in self.segments.values() if s.kind == "vxlan"]
        out = []
        for cmd in (["ip", "-br", "link"], ["ip", "-br", "addr"], ["ip", "neigh"], ["ip", "route"],
                    ["bridge", "vlan", "show"], ["bridge", "vlan", "tunnelshow"], ["bridge", "vni", "show"],
                    ["bridge", "fdb", "show", "dev", self.vxlan_dev],
                    ["bridge", "fdb", "show", "br", self.bridge, "vlan", str(vids[0] if vids else 1)],
                    ["ip", "-s", "link", "show", "dev", self.vxlan_dev]):
            r = lab.sh(cmd, ns=ns, check=False)
            out.append(f"---- {' '.join(cmd)}")
            out += [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        return out

    # ------------------------------------------------------------ frames
    def vxlan_frame(self, fabric, vni, inner, sport=OUTER_SPORT, ttl=64):
        """`inner` as the fabric's remote VTEP sends it to the hypervisor's local VTEP (outer
        IPv4 or IPv6 as the fabric's addresses are; scapy fills in the UDP checksum)."""
        if isinstance(fabric, str):
            fabric = self.fabrics[fabric]
        outer = Ether(dst=fabric.mac, src=fabric.remote_mac)
        for vid in fabric.vlans:
            outer = outer / Dot1Q(vlan=vid)
        l3 = (IPv6(src=fabric.remote, dst=fabric.local, hlim=ttl) if ":" in fabric.remote
              else IP(src=fabric.remote, dst=fabric.local, ttl=ttl))
        return outer / l3 / UDP(sport=sport, dport=self.port) / VXLAN(flags=VXLAN_FLAGS_I, vni=vni) / inner

    def host_frame(self, seg_name, dst_ip, sport, payload, ttl=64, src_ip=None, dport=5001, l4=None, vni=None,
                   router_mac=None):
        """What a host of segment `seg_name` sends to its router, on the wire of the fabric end:
        tagged for a VLAN segment, VXLAN-encapsulated by its VTEP for an EVPN/ACI one (`vni`
        overrides the VNI)."""
        seg = self.segments[seg_name]
        v6 = ":" in dst_ip
        src = src_ip or (seg.host6 if v6 else seg.host4)
        inner = inner_packet(seg.host_mac, router_mac or seg.mac, src, dst_ip, sport, payload, ttl, dport, l4)
        if seg.kind == "vlan":
            return vlan_frame(seg.vid, inner)
        return self.vxlan_frame(self.fabrics[seg.fabric], vni if vni is not None else seg.vni, inner)

    # ------------------------------------------------------------ expectations
    def egress_wire(self, seg_name, dst_mac=None):
        """What the wire part of a frame routed out of segment `seg_name` must be (dict of decode
        keys): VLAN tag and MACs, or the VXLAN outer headers and the inner MACs. dst_mac: the
        next hop's MAC when it is not the segment's host (default: the host / gateway)."""
        seg = self.segments[seg_name]
        dst_mac = dst_mac or seg.host_mac
        if seg.kind == "vlan":
            return {"vlans": [seg.vid], "dst mac": dst_mac, "src mac": seg.mac, "vni": None}
        fab = self.fabrics[seg.fabric]
        return {"vlans": list(fab.vlans), "dst mac": fab.remote_mac, "src mac": fab.mac,
                "outer src ip": fab.local, "outer dst ip": fab.remote, "udp dport": self.port,
                "outer udp checksum ok": True, "vxlan flags": VXLAN_FLAGS_I, "vni": seg.vni, "inner vlans": [],
                "inner dst mac": dst_mac, "inner src mac": seg.mac}

    def routed(self, sent, seg_name, dst_mac=None, hops=1, **override):
        """The expected decode() of `sent` (a frame sent on the fabric end) routed out of `seg_name`:
        egress_wire + the packet unchanged but for the TTL/hop limit (- hops). `override`:
        decode keys with their expected values (spaces as underscores), e.g. src_ip=...;
        a value None drops the key from the comparison."""
        s = decode(sent)
        want = self.egress_wire(seg_name, dst_mac)
        want.update({"src ip": s["src ip"], "dst ip": s["dst ip"], "ttl": s["ttl"] - hops, "proto": s["proto"],
                     "sport": s["sport"], "dport": s["dport"], "l4 checksum ok": True, "payload": s["payload"]})
        if s["_l3"] is not None and isinstance(s["_l3"], IP):
            want["ipv4 checksum ok"] = True
            if isinstance(s["_l3"].payload, UDP):
                want["udp checksum"] = s["_l3"][UDP].chksum   # routing leaves it alone
        elif s["_l3"] is not None and isinstance(s["_l3"].payload, UDP):
            want["udp checksum"] = s["_l3"][UDP].chksum
        for k, v in override.items():
            key = k.replace("_", " ")
            if v is None:
                want.pop(key, None)
            else:
                want[key] = v
        return want

    # ------------------------------------------------------------ checks
    def forward_check(self, lab, name, frame, seg_out, dst_mac=None, notes=None, timeout=5.0, **override):
        """Send `frame` on the fabric end; expect it back there routed out of segment `seg_out`
        (see routed()), compared field by field. Returns the frame seen (or None); reports one check."""
        payload = decode(frame)["payload"]
        got, cap = lab.send_expect(self.fab, self.fab_dev, frame, self.fab, self.fab_dev, payload_match(payload),
                                   timeout=timeout)
        if got is None:
            lab.check(name, False, f"no routed frame on {self.fab_dev} within {timeout:.0f} s; "
                                   f"{cap.others_summary()}")
            return None
        bad = mismatches(lab, got, self.routed(frame, seg_out, dst_mac, **override))
        d = decode(got)
        if notes is not None and d["vni"] is not None:
            notes.append((f"{d['src ip']} -> {d['dst ip']} to {d['outer dst ip']} vni {d['vni']}", outer_note(got)))
        lab.check(name, not bad, f"{bad} in {describe_wire(got)}")
        return got

    def nothing_check(self, lab, name, frames, window=1.0, also=None):
        """Send `frames` on the fabric end and watch it for `window` s: a check that none of their
        payloads (nor a frame for which also(p)) comes back. Returns the frame that came, or None."""
        payloads = [decode(f)["payload"] for f in frames]
        cap = lab.capture(self.fab, self.fab_dev)
        try:
            for f in frames:
                lab.send(self.fab, self.fab_dev, f)
            leaked = cap.expect_none(lambda p: decode(p)["payload"] in payloads or (also is not None and also(p)),
                                     window=window)
        finally:
            cap.close()
        lab.check(f"{name} ({window:.0f} s window)", leaked is None,
                  f"came back: {describe_wire(leaked)}" if leaked is not None else "")
        return leaked

    def time_exceeded_check(self, lab, name, icmp, others, sent, seg_name):
        """A check that `icmp` (a frame seen on the fabric end, None if none came: `others` then
        says what did) is the ICMP time exceeded the router of segment `seg_name` (IPv4) sends
        its host for `sent` (that host's packet, TTL 1): routed out of seg_name as egress_wire
        says, from the segment's address, code 0, quoting sent's destination and TTL 1."""
        if icmp is None:
            return lab.check(name, False, f"no ICMP time exceeded seen; {others}")
        seg = self.segments[seg_name]
        want = self.egress_wire(seg_name)
        want.update({"src ip": seg.addr4, "dst ip": seg.host4, "proto": 1, "ipv4 checksum ok": True})
        more = lab.mismatches([("icmp code", icmp_of(icmp).code, 0),
                               ("quoted dst", icmp[IPerror].dst, decode(sent)["dst ip"]),
                               ("quoted ttl", icmp[IPerror].ttl, 1)])
        bad = "; ".join(x for x in (mismatches(lab, icmp, want), more) if x)
        return lab.check(name, not bad, f"{bad} in {describe_wire(icmp)}")

    # ------------------------------------------------------------ the daemon's fast path
    def nat_first_check(self, lab, daemon, name, frame, sub, seg_out, pool, notes=None, timeout=5.0,
                        punt_in_name=False):
        """A subscriber's first packet toward an outer interface: punted, a chunk pulled, the
        packet put back and translated. Send `frame` (of subscriber `sub`) on the fabric end;
        check that it comes out of `seg_out` once, as routed() says but for its source: an
        address of `pool` and a port of the chunk `daemon` logs (`chunk-allocated`). One check:
        `name: <ms> ms, <public>:<port> (<the chunk line>[; <punt counter>])`. `notes`: as
        forward_check's. Returns a namespace: got (the frame that came out, or None), public and
        port (its source, or None), chunk ((public, lo, hi) of the logged chunk, or None), delay
        (s, or None), punt_note (the punt counter before -> after)."""
        since = len(daemon.lines())
        payload = decode(frame)["payload"]
        punted0 = action_pkts(lab, "mirred", PUNT_INDEX)
        cap = lab.capture(self.fab, self.fab_dev)
        try:
            t0 = time.time()
            lab.send(self.fab, self.fab_dev, frame)
            got = cap.expect(payload_match(payload), timeout)
            dup = cap.expect_none(payload_match(payload), window=0.3) if got is not None else None
            others = cap.others_summary()
        finally:
            cap.close()
        fields, why, _i = daemon.wait_event("chunk-allocated", lambda f: f.get("subscriber") == sub,
                                            2.0 if got is not None else 0.5, since)
        res = types.SimpleNamespace(got=got, public=None, port=None, chunk=None, delay=None,
                                    punt_note=f"punt counter {punted0} -> {action_pkts(lab, 'mirred', PUNT_INDEX)}")
        if fields is not None:
            lo, _, hi = fields.get("ports", "0-0").partition("-")
            res.chunk = (fields.get("public"), int(lo), int(hi or 0))
        if got is None:
            lab.check(name, False, f"not seen on {self.fab_dev} within {timeout:.0f} s ({res.punt_note}; chunk log: "
                                   f"{why}); {others}")
            return res
        res.delay = got.time - t0
        g = decode(got)
        res.public, res.port = g["src ip"], g["sport"]
        pub, lo, hi = res.chunk or (None, 0, -1)
        bad = mismatches(lab, got, self.routed(frame, seg_out, src_ip=pub or "a pool address (no chunk-allocated line)",
                                               sport=None, udp_checksum=None))
        more = lab.mismatches([("src port in chunk", lo <= (g["sport"] or 0) <= hi, True),
                               ("src ip in pool", g["src ip"] in pool, True), ("came out once", dup is None, True)])
        bad = "; ".join(x for x in (bad, more) if x)
        if notes is not None and g["vni"] is not None:
            notes.append((f"nat first packet to {g['outer dst ip']} vni {g['vni']}", outer_note(got)))
        punt = f"; {res.punt_note}" if punt_in_name else ""
        lab.check(f"{name}: {res.delay * 1000:.0f} ms, {g['src ip']}:{g['sport']} "
                  f"({why.strip() if fields else 'no chunk-allocated line'}{punt})", not bad,
                  f"{bad} in {describe_wire(got)}")
        return res

    def dropped_check(self, lab, name, counted, frames, window=1.0):
        """nothing_check(name, frames), then a check that the outer-new drop (gact DROP_OUTER_NEW)
        counted each frame: its name is `counted` formatted with index, n0 and n1 (the counter
        before and after). Returns what nothing_check returns."""
        n0 = action_pkts(lab, "gact", DROP_OUTER_NEW)
        leaked = self.nothing_check(lab, name, frames, window)
        n1 = action_pkts(lab, "gact", DROP_OUTER_NEW)
        lab.check(counted.format(index=DROP_OUTER_NEW, n0=n0, n1=n1),
                  leaked is None and None not in (n0, n1) and n1 - n0 == len(frames),
                  f"counter {n0} -> {n1}, want +{len(frames)}")
        return leaked

    def trace(self, lab, devices, daemons):
        """Print (as trace lines) the rules on `devices`, the last log lines of `daemons` and
        state_dump(): what a failed fast path scenario shows."""
        out = lambda s: print(f"  | {s}", flush=True)  # noqa: E731
        for dev in devices:
            rs = rules(lab, dev, self.hv)
            out(f"---- tc -s filter show dev {dev} ingress: {len(rs)} rules")
            for r in rs:
                out(r.summary())
        for d in daemons:
            out(f"---- daemon {d.tag} log (last 30 lines)")
            for line in d.lines()[-30:]:
                out(line)
        for line in self.state_dump(lab):
            out(line)


DEFAULT = Topology()   # the fixture: what the module-level functions below use


def build(lab, topo=None):
    """Build `topo` (default: the fixture of the module docstring); see Topology.build."""
    return (topo or DEFAULT).build(lab)


vxlan_info = {}   # name -> `ip -j -d link show` info_data of the devices vxlan_devices() saw


def vxlan_devices(lab, ns=HV_NS):
    """[(name, dstport, external, vnifilter)] of every VXLAN device in ns."""
    out = []
    for l in json.loads(lab.sh(["ip", "-j", "-d", "link", "show", "type", "vxlan"], ns=ns).stdout or "[]"):
        d = l.get("linkinfo", {}).get("info_data", {})
        out.append((l["ifname"], d.get("port"), bool(d.get("external")), bool(d.get("vnifilter"))))
        vxlan_info[l["ifname"]] = d
    return out


def udp_binders(lab, port, ns=HV_NS):
    """The UDP sockets bound to `port` in ns, from /proc/net/udp{,6}: ["0.0.0.0:4789", "[::]:4789"]."""
    found = []
    for f, v6 in (("/proc/net/udp", False), ("/proc/net/udp6", True)):
        text = lab.sh(["cat", f], ns=ns, check=False).stdout
        for line in text.splitlines()[1:]:
            local = line.split()[1]
            addr, p = local.split(":")
            if int(p, 16) != port:
                continue
            if v6:
                a = "[::]" if int(addr, 16) == 0 else f"[{addr}]"
            else:
                a = ".".join(str(b) for b in reversed(bytes.fromhex(addr)))
            found.append(f"{a}:{port}")
    return found


def forwarding(lab, on, ns=HV_NS):
    lab.sysctl(ns, "net.ipv4.ip_forward", int(on))
    lab.sysctl(ns, "net.ipv6.conf.all.forwarding", int(on))


def read_forwarding(lab, ns=HV_NS):
    with lab.netns(ns):
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            v4 = f.read().strip()
        with open("/proc/sys/net/ipv6/conf/all/forwarding") as f:
            v6 = f.read().strip()
    return v4, v6


def state_dump(lab, ns=HV_NS):
    """Lines describing the fixture's slow-path state (for a failure trace)."""
    return DEFAULT.state_dump(lab, ns)


# ---------------------------------------------------------------- frames

def inner_packet(src_mac, dst_mac, src_ip, dst_ip, sport, payload, ttl=64, dport=5001, l4=None):
    """An untagged Ethernet frame with IPv4 or IPv6 and UDP (or `l4`, a scapy L4 layer)."""
    l3 = IPv6(src=src_ip, dst=dst_ip, hlim=ttl) if ":" in dst_ip else IP(src=src_ip, dst=dst_ip, ttl=ttl)
    top = l4 if l4 is not None else UDP(sport=sport, dport=dport) / payload
    return Ether(src=src_mac, dst=dst_mac) / l3 / top


def vlan_frame(vid, inner):
    """`inner` (an untagged Ethernet frame) with an 802.1Q tag `vid`."""
    inner = Ether(bytes(inner))
    return Ether(src=inner.src, dst=inner.dst) / Dot1Q(vlan=vid) / inner.payload


def vxlan_frame(fabric, vni, inner, sport=OUTER_SPORT, ttl=64):
    """`inner` as the fabric's remote VTEP sends it to the hypervisor's local VTEP."""
    return DEFAULT.vxlan_frame(fabric, vni, inner, sport, ttl)


def evpn_frame(vni, inner, sport=OUTER_SPORT):
    """EVPN: Ether(p0 MAC <- VTEP MAC) / IP 10.0.1.2 -> 10.0.1.1 / UDP 4789 / VXLAN(vni) / inner."""
    return vxlan_frame(FABRICS["evpn"], vni, inner, sport)


def aci_frame(vni, inner, sport=OUTER_SPORT):
    """Cisco ACI: Ether(p0.2 MAC <- VTEP MAC) / Dot1Q 2 / IP 10.0.2.10 -> 10.0.2.1 / UDP 4789 / VXLAN."""
    return vxlan_frame(FABRICS["aci"], vni, inner, sport)


def host_frame(seg_name, dst_ip, sport, payload, ttl=64, src_ip=None, dport=5001, l4=None, vni=None,
               router_mac=None):
    """What a host of the fixture's segment `seg_name` sends to its router, on the wire of fab0:
    tagged for a VLAN segment, VXLAN-encapsulated by its VTEP for an EVPN/ACI one (`vni`
    overrides the VNI). See Topology.host_frame."""
    return DEFAULT.host_frame(seg_name, dst_ip, sport, payload, ttl, src_ip, dport, l4, vni, router_mac)


# ---------------------------------------------------------------- decoding

def _strip_vlans(eth):
    """(vlan ids outermost first, the layer after the tags) of an Ether."""
    vids, p = [], eth.payload
    while isinstance(p, Dot1Q):
        vids.append(p.vlan)
        p = p.payload
    return vids, p


def _l4_checksum_ok(l3):
    """Whether the UDP/TCP checksum above IP/IPv6 layer `l3` is right (UDP over IPv4: 0 is ok)."""
    cls = IPv6 if isinstance(l3, IPv6) else IP
    ip = cls(bytes(l3))
    for l4 in (UDP, TCP):
        if l4 in ip:
            want = ip[l4].chksum
            if l4 is UDP and cls is IP and want == 0:
                return True
            del ip[l4].chksum
            return cls(bytes(ip))[l4].chksum == want
    return None


def decode(pkt):
    """The fields of a frame on fab0 that the checks compare, as a dict.

    Wire: "vlans" (as labkit.vlans: from PACKET_AUXDATA and the bytes), "dst mac", "src mac".
    VXLAN (UDP dport 4789 right above the outer IP): "outer src ip", "outer dst ip",
    "outer ttl", "udp sport", "udp dport", "outer udp checksum" (0 = none), "outer udp
    checksum ok" (right or 0), "vxlan flags", "vni", "inner vlans", "inner dst mac",
    "inner src mac"; these are None for a frame that is not VXLAN, and then the inner MACs
    are the wire's. The packet: "src ip", "dst ip", "ttl" (hop limit for IPv6), "proto",
    "sport", "dport", "payload", "ipv4 checksum ok", "l4 checksum ok". "_inner" is the
    scapy frame inside (the frame itself when not VXLAN), "_l3" its IP/IPv6 layer."""
    pkt = Ether(bytes(pkt))   # built frames too: their checksums and lengths as on the wire
    d = {"vlans": None, "dst mac": pkt.dst, "src mac": pkt.src}
    vids, l3 = _strip_vlans(pkt)
    d["vlans"] = vids
    for k in ("outer src ip", "outer dst ip", "outer ttl", "udp sport", "udp dport", "outer udp checksum",
              "outer udp checksum ok", "vxlan flags", "vni", "inner vlans"):
        d[k] = None
    inner = pkt
    if isinstance(l3, (IP, IPv6)) and isinstance(l3.payload, UDP) and l3[UDP].dport == VXLAN_PORT:
        udp = l3[UDP]
        vx = VXLAN(bytes(udp.payload))
        d.update({"outer src ip": l3.src, "outer dst ip": l3.dst,
                  "outer ttl": l3.ttl if isinstance(l3, IP) else l3.hlim,
                  "udp sport": udp.sport, "udp dport": udp.dport, "outer udp checksum": udp.chksum,
                  "outer udp checksum ok": _l4_checksum_ok(l3), "vxlan flags": int(vx.flags),
                  "vni": vx.vni})
        inner = Ether(bytes(vx.payload))
        ivids, l3 = _strip_vlans(inner)
        d["inner vlans"] = ivids
    d["inner dst mac"], d["inner src mac"] = inner.dst, inner.src
    d["_inner"], d["_l3"] = inner, l3 if isinstance(l3, (IP, IPv6)) else None
    for k in ("src ip", "dst ip", "ttl", "proto", "sport", "dport", "payload", "ipv4 checksum ok",
              "l4 checksum ok"):
        d[k] = None
    if isinstance(l3, IP):
        d.update({"src ip": l3.src, "dst ip": l3.dst, "ttl": l3.ttl, "proto": l3.proto,
                  "ipv4 checksum ok": ipv4_checksum_ok(l3)})
    elif isinstance(l3, IPv6):
        d.update({"src ip": l3.src, "dst ip": l3.dst, "ttl": l3.hlim, "proto": l3.nh})
    if isinstance(l3, (IP, IPv6)):
        l4 = l3.payload
        if isinstance(l4, (UDP, TCP)):
            d["sport"], d["dport"] = l4.sport, l4.dport
            d["l4 checksum ok"] = _l4_checksum_ok(l3)
        if Raw in l3:
            d["payload"] = l3[Raw].load
    return d


def describe_wire(pkt):
    """One line naming the outer and the inner fields of a frame."""
    d = decode(pkt)
    parts = [f"{d['src mac']}>{d['dst mac']}"] + [f"vlan {v}" for v in d["vlans"]]
    if d["vni"] is not None:
        parts.append(f"{d['outer src ip']}>{d['outer dst ip']} ttl {d['outer ttl']} udp {d['udp sport']}>"
                     f"{d['udp dport']} csum {d['outer udp checksum']:#06x} vxlan flags {d['vxlan flags']:#04x} "
                     f"vni {d['vni']} | {d['inner src mac']}>{d['inner dst mac']}"
                     + "".join(f" vlan {v}" for v in d["inner vlans"]))
    if d["src ip"]:
        l4 = f" {d['sport']}>{d['dport']}" if d["sport"] is not None else ""
        parts.append(f"{d['src ip']}>{d['dst ip']} ttl {d['ttl']} proto {d['proto']}{l4}")
    else:
        parts.append(d["_inner"].lastlayer().name)
    return " ".join(parts)


def is_vxlan(pkt):
    d = decode(pkt)
    return d["vni"] is not None


def payload_match(data):
    """A capture filter: the (inner) packet carries exactly this payload."""
    return lambda p: decode(p)["payload"] == data


# ---------------------------------------------------------------- expectations

KEY_ORDER = ["vlans", "dst mac", "src mac", "outer src ip", "outer dst ip", "udp dport", "outer udp checksum ok",
             "vxlan flags", "vni", "inner vlans", "inner dst mac", "inner src mac", "src ip", "dst ip", "ttl",
             "proto", "sport", "dport", "ipv4 checksum ok", "l4 checksum ok", "udp checksum", "payload"]


def egress_wire(seg_name, dst_mac=None):
    """Topology.egress_wire of the fixture."""
    return DEFAULT.egress_wire(seg_name, dst_mac)


def routed(sent, seg_name, dst_mac=None, hops=1, **override):
    """Topology.routed of the fixture."""
    return DEFAULT.routed(sent, seg_name, dst_mac, hops, **override)


def mismatches(lab, got, want):
    """lab.mismatches over the keys of `want` (a dict as routed() returns) against decode(got)."""
    d = decode(got)
    if "udp checksum" in want:
        l3 = d["_l3"]
        d["udp checksum"] = l3[UDP].chksum if l3 is not None and UDP in l3 else None
    keys = [k for k in KEY_ORDER if k in want] + [k for k in want if k not in KEY_ORDER]
    return lab.mismatches([(k, d.get(k), want[k]) for k in keys])


def outer_note(pkt):
    """The outer fields worth a note (not checked): TTL, UDP source port and checksum."""
    d = decode(pkt)
    if d["vni"] is None:
        return "not VXLAN"
    csum = d["outer udp checksum"]
    shown = "0 (none)" if csum == 0 else f"{csum:#06x} (valid: {d['outer udp checksum ok']})"
    return f"outer ttl {d['outer ttl']}, udp sport {d['udp sport']}, udp checksum {shown}"


def icmp_of(pkt):
    """The ICMP layer of a frame's (inner) packet, or None."""
    l3 = decode(pkt)["_l3"]
    return l3[ICMP] if l3 is not None and ICMP in l3 else None


def tc_blocks(lab, dev, ns=HV_NS, chain=None, stats=True):
    """`tc [-s] filter show dev DEV ingress [chain N]` split into one text block per filter with a handle."""
    cmd = ["tc"] + (["-s"] if stats else []) + ["filter", "show", "dev", dev, "ingress"]
    if chain is not None:
        cmd += ["chain", str(chain)]
    r = lab.sh(cmd, ns=ns, check=False)
    blocks = []
    for line in r.stdout.splitlines():
        if line.startswith("filter "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return ["\n".join(b) for b in blocks if " handle " in b[0]]


def block_pkts(block):
    m = re.search(r"Sent (\d+) bytes (\d+) pkt", block)
    return int(m.group(2)) if m else 0


# ---------------------------------------------------------------- checks both scenarios make

def forward_check(lab, name, frame, seg_out, dst_mac=None, notes=None, timeout=5.0, **override):
    """Topology.forward_check of the fixture: send `frame` on fab0, expect it routed out of `seg_out`."""
    return DEFAULT.forward_check(lab, name, frame, seg_out, dst_mac, notes, timeout, **override)


def nothing_check(lab, name, frames, window=1.0, also=None):
    """Topology.nothing_check of the fixture: none of `frames` comes back on fab0 within `window` s."""
    return DEFAULT.nothing_check(lab, name, frames, window, also)


def time_exceeded(cap, sent):
    """Wait on capture `cap` for an ICMP time exceeded quoting `sent` (a UDP packet, known by its
    source port): the frame, or None."""
    sport = decode(sent)["sport"]
    return cap.expect(lambda p: (icmp_of(p) is not None and icmp_of(p).type == 11
                                 and UDPerror in p and p[UDPerror].sport == sport))


def time_exceeded_check(lab, name, icmp, others, sent, seg_name):
    """Topology.time_exceeded_check of the fixture."""
    return DEFAULT.time_exceeded_check(lab, name, icmp, others, sent, seg_name)


# ---------------------------------------------------------------- the daemon's tc rules (fast path scenarios)

# lib/core/compile/pipeline.hpp
CHAIN_VXLAN_BASE = 0x10000    # kChainVxlanBase: the VXLAN device's chains are it + the uplink's
CHAIN_INNER = 0x100           # kChainInner
CHAIN_OUTER = 0x200           # kChainOuter
PRIO_DECAP = 1                # kPrioDecap: the VXLAN device's chain 0, one rule per VNI
PUNT_INDEX = 0xd9200000       # kPuntIndex (mirred)
DROP_OUTER_NEW = 0xd9300001   # kDropOuterNew (gact)
EGRESS_VLAN = 0xd9000000      # kEgressCounterVlanBase (+ vid; mirred)
EGRESS_VXLAN = 0xda000000     # kEgressCounterVxlanBase (+ vni; mirred)


class Rule:
    """One filter (with a handle) of `tc -s filter show dev DEV ingress`: chain, pref, protocol,
    keys (the flower match), actions (one text each), pkts (its counter), in_hw."""

    KEY = re.compile(r"^\s+([a-z][a-z0-9_]*) (\S+)$")

    def __init__(self, dev, block):
        self.dev, self.block = dev, block
        lines = block.splitlines()
        m = re.search(r"chain (\d+)", lines[0])
        self.chain = int(m.group(1)) if m else 0
        m = re.search(r"pref (\d+)", lines[0])
        self.pref = int(m.group(1)) if m else 0
        m = re.search(r"protocol (\S+)", lines[0])
        self.protocol = m.group(1) if m else "?"
        self.keys = {}
        for l in lines[1:]:
            if "action order" in l:
                break
            km = self.KEY.match(l)
            if km and km.group(1) not in ("in_hw_count",):
                self.keys[km.group(1)] = km.group(2)
        self.actions = [a.strip() for a in re.findall(r"action order \d+: (.*)", block)]
        self.pkts = block_pkts(block)
        self.in_hw = bool(re.search(r"^\s*in_hw\b", block, re.M))

    def summary(self):
        """One line: device, chain, pref, protocol, keys -> actions [tunnel_key set's VTEPs and VNI]: pkts."""
        keys = " ".join(f"{k} {v}" for k, v in self.keys.items())
        acts = "; ".join(re.sub(r"\s+", " ", a)[:60] for a in self.actions)
        tun = re.search(r"tunnel_key\s+set.*?(src_ip \S+).*?(dst_ip \S+).*?(key_id \d+)", self.block, re.S)
        if tun:
            acts += f" [{' '.join(tun.groups())}]"
        return f"{self.dev} chain {self.chain:#x} pref {self.pref} {self.protocol} {keys} -> {acts}: {self.pkts} pkt"


def rules(lab, dev, ns=HV_NS):
    """The Rules on dev's ingress."""
    return [Rule(dev, b) for b in tc_blocks(lab, dev, ns)]


def action_pkts(lab, kind, index, ns=HV_NS):
    """The packet counter of tc action `kind` `index` (None if there is no such action)."""
    r = lab.sh(["tc", "-s", "actions", "get", "action", kind, "index", str(index)], ns=ns, check=False)
    m = re.search(r"Sent (\d+) bytes (\d+) pkt", r.stdout)
    return int(m.group(2)) if m else None


def counter_deltas(before, after, keys):
    """{key: after - before} of two counter dicts (None where either is None or missing)."""
    return {k: (after[k] - before[k]) if None not in (after.get(k), before.get(k)) else None for k in keys}


def decap_rules(lab, dev=VXLAN_DEV, ns=HV_NS):
    """{VNI (as tc prints enc_key_id): Rule} of the decap rules on the VXLAN device `dev`."""
    return {r.keys.get("enc_key_id"): r for r in rules(lab, dev, ns) if r.chain == 0 and r.pref == PRIO_DECAP}


def decap_mismatches(got, want, port=VXLAN_PORT):
    """What is wrong with decap rules `got` (decap_rules()) for `want` = {VNI: (local VTEP, SVI
    MAC, chain)}: every VNI has a rule matching enc_dst_ip VTEP, enc_dst_port `port`, dst_mac
    MAC and going to chain; no other VNI has one. A list of texts, empty when all is right."""
    bad = []
    for vni, (vtep, mac, chain) in want.items():
        r = got.get(vni)
        if r is None:
            bad.append(f"no decap rule for vni {vni}")
            continue
        bad += [f"vni {vni}: {k} {r.keys.get(k)} (want {v})" for k, v in
                (("enc_dst_ip", vtep), ("enc_dst_port", str(port)), ("dst_mac", mac)) if r.keys.get(k) != v]
        if f"goto chain {chain}" not in " ".join(r.actions):
            bad.append(f"vni {vni}: actions {r.actions} (want goto chain {chain})")
    return bad + [f"decap rule for vni {v}, not in the mapping" for v in got if v not in want]


def reconciled_check(lab, what, daemon, rec):
    """A check that the daemon's first pass (`rec`: the fields of its `reconciled` line, as
    labkit.start_daemon returns them) installed rules and refused none, rule-refused lines
    included: `what in <s> s (rules=.. added=.. refused=..)`."""
    refused = daemon.events("rule-refused")
    return lab.check(f"{what} in {rec['_s']} s (rules={rec.get('rules')} added={rec.get('added')} "
                     f"refused={rec.get('refused')})",
                     rec.get("refused") == "0" and not refused and int(rec.get("rules", 0)) > 0,
                     f"{rec['_line']}; refused: {refused[:3]}")


def forwarding_off_check(lab, prefix="", ns=HV_NS):
    """A check that kernel forwarding is off in ns (the fast path scenarios keep it off)."""
    v4, v6 = read_forwarding(lab, ns)
    return lab.check(f"{prefix}kernel forwarding is off in {ns} (ip_forward=0, ipv6 all.forwarding=0)",
                     (v4, v6) == ("0", "0"), f"ip_forward={v4} all.forwarding={v6}")


def daemon_flush(lab, config, ns=HV_NS):
    """Run `dpoffloadd --flush --config CONFIG` in ns: (CompletedProcess, its last log line, that
    line's event and fields)."""
    r = lab.sh(["ip", "netns", "exec", ns, lab.daemon_path(), "--flush", "--config", config], check=False)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    ev, fields = parse_log_line(last)
    return r, last, ev, fields

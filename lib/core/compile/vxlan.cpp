// SPDX-License-Identifier: GPL-2.0-or-later
// EVPN and Cisco ACI: the metadata-mode VXLAN device both use, the tunnel a packet
// leaves through toward an EVPN or ACI interface (group 3: encap), and the rule that
// picks the interface from the VNI (group 2: iface = f(vni), decap implicit).
#include <algorithm>

#include "parts.hpp"

namespace dpo::compile {

std::string vxlan_unusable(const Mapping& m, const Link* vx) {
    if (!vx) return " does not exist";
    if (!vx->up) return " is down";
    if (vx->kind != "vxlan") return " is not a VXLAN device";
    // Only a metadata-mode device takes the VNI and VTEPs from tunnel_key; a per-VNI
    // device would send everything with its own.
    if (vx->vxlan_id) return " is not in metadata (external) mode";
    // The decap rules match the mapping's port and the encap sends to it: the kernel's
    // socket must be the one on that port, or the two paths disagree.
    if (vx->vxlan_port && *vx->vxlan_port != m.vxlan->port)
        return " uses UDP port " + std::to_string(*vx->vxlan_port) + ", the mapping " + std::to_string(m.vxlan->port);
    return "";
}

// VXLAN toward the interface's remote VTEP, from the local VTEP of its fabric. The
// kernel (or the NIC) routes the outer packet; what it cannot route it drops, so the
// fast path sends nothing toward a VTEP without a route, and ACI's VTEPs must be
// reached through the infra VLAN on the uplink, as the fabric expects.
std::string tunnel_egress(const Mapping& m, FactReader& r, const Link& uplink, const Link* vx, const Interface& i,
                          EgressPort& port) {
    if (!vx || !vxlan_unusable(m, vx).empty())
        return "egress " + i.netdev + ": VXLAN device " + (m.vxlan ? m.vxlan->device : std::string("?")) +
               " is not a metadata-mode VXLAN device that is up on the mapping's port";
    const bool aci = std::holds_alternative<AciEncap>(i.encap);
    const std::uint32_t vni = aci ? std::get<AciEncap>(i.encap).vni : std::get<EvpnEncap>(i.encap).vni;
    const IpAddress remote = aci ? std::get<AciEncap>(i.encap).remote_vtep : std::get<EvpnEncap>(i.encap).remote_vtep;
    // The loader guarantees the fabric section of every VXLAN interface. The kernel
    // routes the outer packet from this source: one the host does not own makes it
    // drop the packet, which the slow path would have delivered.
    const IpAddress local = aci ? m.aci->local_vtep : m.evpn->local_vtep;
    if (!r.local(local)) return "egress " + i.netdev + ": local VTEP " + local.str() + " is not an address of this host";
    const Route* rt = r.underlay(remote);
    if (!rt || rt->type != kRtnUnicast || rt->nexthops.empty())
        return "egress " + i.netdev + ": no route to remote VTEP " + remote.str();
    if (aci) {
        // Every nexthop (an underlay may be ECMP) through the infra VLAN device.
        const bool infra = std::all_of(rt->nexthops.begin(), rt->nexthops.end(), [&](const Nexthop& nh) {
            const Link* l = r.at(nh.ifindex);
            return l && l->vlan_id == m.aci_vlan() && l->parent_ifindex == uplink.ifindex;
        });
        if (!infra)
            return "egress " + i.netdev + ": remote VTEP " + remote.str() + " is not reached through the ACI infra VLAN " +
                   std::to_string(m.aci_vlan()) + " on " + uplink.name;
    }
    tc::TunnelSet t;
    t.vni = vni;
    t.src = local;
    t.dst = remote;
    t.dst_port = m.vxlan->port;
    // IPv4: a zero UDP checksum (RFC 7348, and what NICs encapsulate with); IPv6
    // requires one (RFC 6935 allows zero only where the receiver is told).
    t.csum = remote.family == Family::V6;
    port.tunnel = t;
    port.out = vx->name;
    port.out_ifindex = vx->ifindex;
    port.counter = kEgressCounterVxlanBase + t.vni;
    return "";
}

tc::Rule decap_rule(const Mapping& m, const IngressDevice& d, const Interface& i, const Link& netdev) {
    const bool aci = std::holds_alternative<AciEncap>(i.encap);
    const std::uint32_t vni = aci ? std::get<AciEncap>(i.encap).vni : std::get<EvpnEncap>(i.encap).vni;
    tc::Rule r;
    r.dev = d.dev;
    // Only frames addressed to the router are routed: flooded unknown unicast and
    // broadcast are the kernel's (it bridges, drops or answers them).
    r.match.dst_mac = netdev.mac;
    r.chain = kChainSharedIngress;
    r.prio = kPrioDecap;
    r.protocol = tc::kEthAll;
    // mlx5: the VNI, the local VTEP and an exact UDP port it knows; the remote VTEP
    // unmatched (any remote of the fabric may send).
    r.match.enc_key_id = vni;
    r.match.enc_dst_ip = aci ? m.aci->local_vtep : m.evpn->local_vtep;
    r.match.enc_dst_port = m.vxlan->port;
    r.actions = {tc::Goto{d.base + process_chain(i.role)}};
    r.why = "iface " + i.name + " = f(vni " + std::to_string(vni) + "), " + (aci ? "aci" : "evpn") + " decap";
    return r;
}

}  // namespace dpo::compile

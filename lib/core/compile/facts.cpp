// SPDX-License-Identifier: GPL-2.0-or-later
#include "facts.hpp"

#include <algorithm>

#include "pipeline.hpp"

namespace dpo::compile {

namespace {

constexpr std::uint8_t kRtnUnicast = 1;

class FactReader {
public:
    FactReader(const Mapping& m, const model::KernelModel& k, std::vector<Input>* reads) : m_(m), k_(k), reads_(reads) {}

    const Link* named(const std::string& name) {
        record(input::LinkNamed::of(name));
        return k_.link_named(name);
    }
    const Link* at(int ifindex) {
        record(input::LinkAt{ifindex});
        return k_.link(ifindex);
    }
    bool local(const IpAddress& a) {
        record(input::Local{a});
        return k_.is_local(a);
    }
    const Route* underlay(const IpAddress& a) {
        record(input::Lpm{kMainRouteTable, a});
        return k_.table(kMainRouteTable).lookup(a);
    }

    // Why the VXLAN device cannot carry the fast path's VXLAN, or "".
    std::string vxlan_unusable(const Link* vx) const {
        if (!vx) return " does not exist";
        if (!vx->up) return " is down";
        if (vx->kind != "vxlan") return " is not a VXLAN device";
        // Only a metadata-mode device takes the VNI and VTEPs from tunnel_key; a
        // per-VNI device would send everything with its own.
        if (vx->vxlan_id) return " is not in metadata (external) mode";
        // The decap rules match the mapping's port and the encap sends to it: the
        // kernel's socket must be the one on that port, or the two paths disagree.
        if (vx->vxlan_port && *vx->vxlan_port != m_.vxlan->port)
            return " uses UDP port " + std::to_string(*vx->vxlan_port) + ", the mapping " +
                   std::to_string(m_.vxlan->port);
        return "";
    }

    // VXLAN toward the interface's remote VTEP, from the local VTEP of its fabric. The
    // kernel (or the NIC) routes the outer packet; what it cannot route it drops, so
    // the fast path sends nothing toward a VTEP without a route, and ACI's VTEPs must
    // be reached through the infra VLAN on the uplink, as the fabric expects.
    std::string tunnel(const Link& uplink, const Link* vx, const Interface& i, EgressPort& port) {
        if (!vx || !vxlan_unusable(vx).empty())
            return "egress " + i.netdev + ": VXLAN device " + (m_.vxlan ? m_.vxlan->device : std::string("?")) +
                   " is not a metadata-mode VXLAN device that is up on the mapping's port";
        const bool aci = std::holds_alternative<AciEncap>(i.encap);
        const std::uint32_t vni = aci ? std::get<AciEncap>(i.encap).vni : std::get<EvpnEncap>(i.encap).vni;
        const IpAddress remote = aci ? std::get<AciEncap>(i.encap).remote_vtep : std::get<EvpnEncap>(i.encap).remote_vtep;
        // The loader guarantees the fabric section of every VXLAN interface. The kernel
        // routes the outer packet from this source: one the host does not own makes it
        // drop the packet, which the slow path would have delivered.
        const IpAddress local = aci ? m_.aci->local_vtep : m_.evpn->local_vtep;
        if (!this->local(local)) return "egress " + i.netdev + ": local VTEP " + local.str() + " is not an address of this host";
        const Route* rt = underlay(remote);
        if (!rt || rt->type != kRtnUnicast || rt->nexthops.empty())
            return "egress " + i.netdev + ": no route to remote VTEP " + remote.str();
        if (aci) {
            // Every nexthop (an underlay may be ECMP) through the infra VLAN device.
            const bool infra = std::all_of(rt->nexthops.begin(), rt->nexthops.end(), [&](const Nexthop& nh) {
                const Link* l = at(nh.ifindex);
                return l && l->vlan_id == m_.aci_vlan() && l->parent_ifindex == uplink.ifindex;
            });
            if (!infra)
                return "egress " + i.netdev + ": remote VTEP " + remote.str() + " is not reached through the ACI infra VLAN " +
                       std::to_string(m_.aci_vlan()) + " on " + uplink.name;
        }
        tc::TunnelSet t;
        t.vni = vni;
        t.src = local;
        t.dst = remote;
        t.dst_port = m_.vxlan->port;
        // IPv4: a zero UDP checksum (RFC 7348, and what NICs encapsulate with); IPv6
        // requires one (RFC 6935 allows zero only where the receiver is told).
        t.csum = remote.family == Family::V6;
        port.tunnel = t;
        port.out = vx->name;
        port.out_ifindex = vx->ifindex;
        port.counter = kEgressCounterVxlanBase + t.vni;
        return "";
    }

private:
    void record(Input i) {
        if (reads_) reads_->push_back(std::move(i));
    }

    const Mapping& m_;
    const model::KernelModel& k_;
    std::vector<Input>* reads_;
};

}  // namespace

Facts compute_facts(const Mapping& m, const model::KernelModel& k, std::vector<Input>* reads) {
    Facts f;
    FactReader r(m, k, reads);
    const Link* uplink = r.named(m.uplink);
    if (!uplink) {
        f.notes.push_back("uplink " + m.uplink + " does not exist: no rules");
        return f;
    }
    // The VXLAN device carries the EVPN and ACI interfaces' rules; without it (or
    // down) the kernel takes in no VXLAN either, and the fast path none.
    const Link* vx = nullptr;
    if (m.vxlan) {
        vx = r.named(m.vxlan->device);
        if (const std::string why = r.vxlan_unusable(vx); !why.empty()) {
            f.notes.push_back("VXLAN device " + m.vxlan->device + why + ": EVPN and ACI interfaces are left to the kernel");
            vx = nullptr;
        }
    }

    // Each device routes for the roles its interfaces have in the mapping, whether
    // their netdevs are up or not: a netdev going down removes its classification rule,
    // not the routing chains the other interfaces of its role share.
    IngressDevice up{IngressDev::Uplink, uplink->name, uplink->ifindex, true, 0, false, false};
    IngressDevice vxd{IngressDev::Vxlan, vx ? vx->name : "", vx ? vx->ifindex : 0, false, kChainVxlanBase, false, false};
    for (const Interface& i : m.interfaces) {
        IngressDevice& d = std::holds_alternative<VlanEncap>(i.encap) ? up : vxd;
        (i.role == Role::Inner ? d.inner : d.outer) = true;
    }
    f.ingress[static_cast<std::size_t>(IngressDev::Uplink)] = up;
    if (vx && vxd.routes()) f.ingress[static_cast<std::size_t>(IngressDev::Vxlan)] = vxd;

    for (std::uint32_t idx = 0; idx < m.interfaces.size(); ++idx) {
        const Interface& i = m.interfaces[idx];
        const Link* netdev = r.named(i.netdev);
        // A device that is down sends nothing in the kernel either.
        if (!netdev || !netdev->up) continue;
        EgressPort port;
        port.interface = idx;
        port.name = i.name;
        port.role = i.role;
        port.netdev = i.netdev;
        port.source = netdev->mac;
        port.out = uplink->name;
        port.out_ifindex = uplink->ifindex;
        if (const auto* vlan = std::get_if<VlanEncap>(&i.encap)) {
            port.vid = vlan->vid;
            port.counter = kEgressCounterVlanBase + vlan->vid;
        } else if (auto why = r.tunnel(*uplink, m.vxlan ? k.link_named(m.vxlan->device) : nullptr, i, port);
                   !why.empty()) {
            f.refused.emplace(netdev->ifindex, std::move(why));
            continue;
        }
        f.egress.emplace(netdev->ifindex, std::move(port));
    }
    return f;
}

}  // namespace dpo::compile

// SPDX-License-Identifier: GPL-2.0-or-later
#include "facts.hpp"

#include <algorithm>

#include "parts.hpp"

namespace dpo::compile {

Facts compute_facts(const Mapping& m, const model::KernelModel& k, std::vector<Input>* reads) {
    Facts f;
    FactReader r(k, reads);
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
        if (const std::string why = vxlan_unusable(m, vx); !why.empty()) {
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
        } else if (auto why = tunnel_egress(m, r, *uplink, m.vxlan ? k.link_named(m.vxlan->device) : nullptr, i, port);
                   !why.empty()) {
            f.refused.emplace(netdev->ifindex, std::move(why));
            continue;
        }
        f.egress.emplace(netdev->ifindex, std::move(port));
    }
    return f;
}

}  // namespace dpo::compile

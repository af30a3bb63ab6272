// SPDX-License-Identifier: GPL-2.0-or-later
#include "inventory.hpp"

#include <variant>

#include "core/gcc_workarounds.hpp"
#include "core/text.hpp"

namespace dpo {

namespace {
std::string encap_text(const Mapping& m, const Interface& i) {
    if (const auto* v = std::get_if<VlanEncap>(&i.encap)) return "vlan " + std::to_string(v->vid);
    if (const auto* e = std::get_if<EvpnEncap>(&i.encap))
        return "evpn vni " + std::to_string(e->vni) + " remote " + e->remote_vtep.str();
    const auto& a = std::get<AciEncap>(i.encap);
    return "aci vlan " + std::to_string(m.aci_vlan()) + " vni " + std::to_string(a.vni) + " remote " +
           a.remote_vtep.str();
}

std::string route_text(const KernelState& k, const Route& r) {
    std::string s = r.destination.str();
    for (const auto& nh : r.nexthops) {
        if (nh.gateway) s += " via " + nh.gateway->str();
        s += " dev " + k.link_name(nh.ifindex);
    }
    return s;
}
}  // namespace

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::vector<std::string> describe_mapping(const Mapping& m) {
    std::vector<std::string> out;
    out.push_back("uplink " + m.uplink + ", route table " + std::to_string(m.route_table));
    if (m.vxlan) out.push_back("vxlan device " + m.vxlan->device + " udp " + std::to_string(m.vxlan->port));
    if (m.evpn) out.push_back("evpn local vtep " + m.evpn->local_vtep.str());
    if (m.aci) out.push_back("aci infra vlan " + std::to_string(m.aci->vlan) + " local vtep " + m.aci->local_vtep.str());
    for (const auto& i : m.interfaces)
        out.push_back("interface " + i.name + ": " + to_string(i.role) + ", netdev " + i.netdev + ", " + encap_text(m, i));
    if (m.nat) {
        std::string pool;
        for (const auto& p : m.nat->pool) pool += (pool.empty() ? "" : " ") + p.str();
        out.push_back("nat zone " + std::to_string(m.nat->zone) + " pool " + pool + " ports " +
                      std::to_string(m.nat->ports.first) + ".." + std::to_string(m.nat->ports.last) + " chunk " +
                      std::to_string(m.nat->chunk_size) + " x" + std::to_string(m.nat->max_chunks_per_subscriber) +
                      " per subscriber, idle " + std::to_string(m.nat->chunk_idle_seconds) + "s");
    } else {
        out.push_back("no nat: inner -> outer is routed without translation");
    }
    // Names come from the file (a netdev may hold any byte but /, : and blanks): shown escaped.
    for (auto& line : out) line = printable(line);
    return out;
}
DPO_GCC_WARNING_ON

std::vector<Finding> inspect_kernel(const Mapping& m, const KernelState& k) {
    std::vector<Finding> out;
    const Link* uplink = k.link_by_name(m.uplink);
    if (!uplink) out.push_back({false, "uplink " + m.uplink + ": no such netdev"});
    else
        out.push_back({uplink->up, "uplink " + m.uplink + ": ifindex " + std::to_string(uplink->ifindex) + " mac " +
                                       mac_str(uplink->mac) + (uplink->up ? " up" : " DOWN")});
    if (m.vxlan) {
        const Link* vx = k.link_by_name(m.vxlan->device);
        if (!vx) out.push_back({false, "vxlan device " + m.vxlan->device + ": no such netdev"});
        else
            out.push_back({vx->kind == "vxlan" && !vx->vxlan_id && vx->up,
                           "vxlan device " + m.vxlan->device + ": kind " + (vx->kind.empty() ? "?" : vx->kind) +
                               (vx->vxlan_id ? " vni " + std::to_string(*vx->vxlan_id) +
                                                   ", but the fast path needs a metadata-mode (external) device"
                                             : " (metadata mode)") +
                               (vx->up ? " up" : " DOWN")});
        if (vx && vx->vxlan_port && *vx->vxlan_port != m.vxlan->port)
            out.push_back({false, "vxlan device " + m.vxlan->device + ": UDP port " + std::to_string(*vx->vxlan_port) +
                                      ", but the mapping says " + std::to_string(m.vxlan->port)});
    }
    // A local VTEP the host does not own receives nothing: the decap rules would wait in vain.
    auto vtep = [&](const char* fabric, const IpAddress& a) {
        const Address* found = nullptr;
        for (const auto& x : k.addresses)
            if (x.prefix.address == a) found = &x;
        out.push_back({found != nullptr, std::string(fabric) + " local vtep " + a.str() +
                                             (found ? ": on " + k.link_name(found->ifindex)
                                                    : ": not an address of this host")});
    };
    if (m.evpn) vtep("evpn", m.evpn->local_vtep);
    if (m.aci) vtep("aci", m.aci->local_vtep);
    for (const auto& i : m.interfaces) {
        const std::string head = "interface " + i.name + " (" + i.netdev + "): ";
        const Link* l = k.link_by_name(i.netdev);
        if (!l) {
            out.push_back({false, head + "no such netdev"});
            continue;
        }
        std::string text = head + "ifindex " + std::to_string(l->ifindex) + " mac " + mac_str(l->mac) +
                           (l->up ? " up" : " DOWN");
        bool ok = l->up;
        if (const auto* v = std::get_if<VlanEncap>(&i.encap)) {
            const bool right_vlan = l->kind == "vlan" && l->vlan_id == v->vid;
            const bool on_uplink = uplink && l->parent_ifindex == uplink->ifindex;
            if (!right_vlan)
                text += l->kind == "vlan" ? ", but it is VLAN " + std::to_string(l->vlan_id.value_or(0)) + ", not " +
                                                std::to_string(v->vid)
                                          : ", but it is not a VLAN device";
            else if (!on_uplink)
                text += ", but its lower device is " + k.link_name(l->parent_ifindex) + ", not the uplink";
            ok = ok && right_vlan && on_uplink;
        }
        out.push_back({ok, text});
        for (const auto& a : k.addresses)
            if (a.ifindex == l->ifindex) out.push_back({true, "  address " + a.prefix.str()});
        for (const auto& r : k.routes) {
            bool here = false;
            for (const auto& nh : r.nexthops) here = here || nh.ifindex == l->ifindex;
            if (here && r.table == m.route_table) out.push_back({true, "  route " + route_text(k, r)});
        }
        for (const auto& n : k.neighbours) {
            // Multicast "neighbours" (NOARP entries) are the kernel's bookkeeping, not hosts.
            if (n.ifindex != l->ifindex || n.address.is_special()) continue;
            out.push_back({true, "  neighbour " + n.address.str() +
                                     (n.mac ? " lladdr " + mac_str(*n.mac) : std::string(" (no lladdr)")) +
                                     (n.state == NeighbourState::Resolved ? " resolved" : " unresolved")});
        }
    }
    return out;
}

}  // namespace dpo

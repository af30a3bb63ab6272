// SPDX-License-Identifier: GPL-2.0-or-later
// Group 1 (shared ingress) and group 2 (lookup interface id) of the flow chart.
#include "parts.hpp"

namespace dpo::compile {

void compile_devices(View& v, KeyOutput& out) {
    const Facts& f = v.facts();
    out.notes = f.notes;
    const IngressDevice* up = f.device(IngressDev::Uplink);
    if (!up) return;
    // Group 1: shared ingress. Tagged frames go on to classification; ACI's VLAN 2 +
    // VXLAN meets its decap rule (VXLAN device, prio 1) first in mlx5's shared table.
    tc::Rule ingress;
    ingress.dev = up->dev;
    ingress.chain = kChainSharedIngress;
    ingress.prio = kPrioIngress;
    ingress.protocol = tc::kEth8021Q;
    ingress.actions = {tc::Goto{kChainClassify}};
    ingress.why = "shared ingress";
    out.rules.push_back(std::move(ingress));
}

// Group 2: iface = f(vlan) on the uplink, iface = f(vni) on the VXLAN device (vxlan.cpp).
// A VLAN tag stays on until a rule decides to forward; a VXLAN packet is already
// decapsulated (by the kernel's VXLAN socket, or implicitly by the NIC).
void compile_classify(const ClassifyKey& k, View& v, KeyOutput& out) {
    const Mapping& m = v.mapping();
    if (k.interface >= m.interfaces.size()) return;  // a reload took it away
    const Interface& i = m.interfaces[k.interface];
    const auto* vlan = std::get_if<VlanEncap>(&i.encap);
    const IngressDevice* d = v.facts().device(vlan ? IngressDev::Uplink : IngressDev::Vxlan);
    if (!d) return;  // the device's own note says why
    // The kernel takes in nothing on an interface whose device is missing or down:
    // the fast path must not carry what the slow path would not.
    const Link* netdev = v.link_named(i.netdev);
    if (!netdev || !netdev->up) {
        out.notes.push_back("interface " + i.name + ": netdev " + i.netdev + (netdev ? " is down" : " does not exist") +
                            ": its " + (vlan ? "VLAN" : "VNI") + " is left to the kernel");
        return;
    }
    if (!vlan) {
        out.rules.push_back(decap_rule(m, *d, i, *netdev));
        return;
    }
    tc::Rule r;
    r.dev = d->dev;
    // Only frames addressed to the router are routed: flooded unknown unicast and
    // broadcast are the kernel's (it bridges, drops or answers them).
    r.match.dst_mac = netdev->mac;
    r.chain = kChainClassify;
    r.prio = kPrioClassify;
    r.protocol = tc::kEth8021Q;
    r.match.vlan_id = vlan->vid;
    r.actions = {tc::Goto{process_chain(i.role)}};
    r.why = "iface " + i.name + " = f(vlan " + std::to_string(vlan->vid) + ")";
    out.rules.push_back(std::move(r));
}

}  // namespace dpo::compile

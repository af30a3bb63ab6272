// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The per-key compilers, one file per part of the flow chart; compile_key() (view.hpp)
// dispatches to them. Internal to lib/core/compile.
//   classify.cpp   group 1 and 2: shared ingress, iface = f(vlan) / f(vni)
//   host.cpp       the fixed rules of a routing chain, and the host's own addresses
//   routes.cpp     routes, connected hosts, next hops (group 3's routing, 3 and 4's tails)
//   nat.cpp        the NAT stage: conntrack by state, subscribers, the punt pair
//   vxlan.cpp      EVPN and ACI: the VXLAN device, tunnels out, iface = f(vni) in
//   facts.cpp      the egress facts (facts.hpp), read through a FactReader

#include "core/compile/rules.hpp"
#include "core/compile/view.hpp"

namespace dpo::compile {

void compile_devices(View& v, KeyOutput& out);
void compile_classify(const ClassifyKey& k, View& v, KeyOutput& out);
void compile_pipeline(const PipelineKey& k, View& v, KeyOutput& out);
void compile_local_address(const LocalAddressKey& k, View& v, KeyOutput& out);
void compile_prefix(const PrefixKey& k, View& v, KeyOutput& out);
void compile_host(const HostKey& k, View& v, KeyOutput& out);
void compile_adjacency(const AdjacencyKey& k, View& v, KeyOutput& out);
void compile_subscriber(const SubscriberKey& k, View& v, KeyOutput& out);
void compile_punt(View& v, KeyOutput& out);

// NAT pieces of other keys' chains (nat.cpp).
// Outer ingress: conntrack first, then new and invalid are dropped (a Pipeline key's).
void nat_outer_lookup(const IngressDevice& d, std::uint16_t zone, KeyOutput& out);
// First packets of subscribers without a rule: to the daemon (a Pipeline key's).
void nat_punt_rule(const IngressDevice& d, const nat::NatView& nat, const Nat& config, KeyOutput& out);
// One next hop reached through NAT, by connection state (an Adjacency key's).
void nat_adjacency_chain(const IngressDevice& d, std::uint16_t zone, std::uint32_t id, Family f,
                         const std::vector<tc::Action>& tail, const std::string& toward, KeyOutput& out);

// What the egress facts read, recorded like a key's reads (facts.cpp, vxlan.cpp).
class FactReader {
public:
    FactReader(const model::KernelModel& k, std::vector<Input>* reads) : k_(k), reads_(reads) {}
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
    // The main table's route toward a VTEP.
    const Route* underlay(const IpAddress& a) {
        record(input::Lpm{kMainRouteTable, a});
        return k_.table(kMainRouteTable).lookup(a);
    }

private:
    void record(Input i) {
        if (reads_) reads_->push_back(std::move(i));
    }
    const model::KernelModel& k_;
    std::vector<Input>* reads_;
};

// VXLAN (vxlan.cpp). Why the mapping's VXLAN device cannot carry the fast path's EVPN
// and ACI, or "".
std::string vxlan_unusable(const Mapping& m, const Link* vx);
// How a packet leaves through an EVPN or ACI interface (fills `port`), or why it cannot.
std::string tunnel_egress(const Mapping& m, FactReader& r, const Link& uplink, const Link* vx, const Interface& i,
                          EgressPort& port);
// iface = f(vni): the decap classification of one EVPN or ACI interface on the VXLAN device.
tc::Rule decap_rule(const Mapping& m, const IngressDevice& d, const Interface& i, const Link& netdev);

}  // namespace dpo::compile

// SPDX-License-Identifier: GPL-2.0-or-later
#include "view.hpp"

namespace dpo::compile {

const Link* View::link(int ifindex) {
    record(input::LinkAt{ifindex});
    return k_.link(ifindex);
}

const Link* View::link_named(const std::string& name) {
    record(input::LinkNamed::of(name));
    return k_.link_named(name);
}

std::string View::link_name(int ifindex) {
    record(input::LinkAt{ifindex});
    return k_.link_name(ifindex);
}

bool View::local(const IpAddress& a) {
    record(input::Local{a});
    return k_.is_local(a);
}

const Route* View::prefix_route(const IpPrefix& p) const { return k_.table(m_.route_table).best(p); }

const Route* View::lookup(const IpAddress& a) {
    record(input::Lpm{m_.route_table, a});
    return k_.table(m_.route_table).lookup(a);
}

const Neighbour* View::neighbour(int ifindex, const IpAddress& a) {
    record(input::Neighbour{ifindex, a});
    return k_.neighbour(ifindex, a);
}

const Neighbour* View::resolved(int ifindex, const IpAddress& a) {
    const Neighbour* n = neighbour(ifindex, a);
    return n && n->state == NeighbourState::Resolved && n->mac ? n : nullptr;
}

const Neighbour* View::resolved_gateway(int ifindex, const IpAddress& a) {
    record(input::Resolved{ifindex, a});
    const Neighbour* n = k_.neighbour(ifindex, a);
    return n && n->state == NeighbourState::Resolved && n->mac ? n : nullptr;
}

const EgressPort* View::egress(int ifindex) {
    record(input::Egress{ifindex});
    const auto it = facts_.egress.find(ifindex);
    return it == facts_.egress.end() ? nullptr : &it->second;
}

std::string View::why_no_egress(int ifindex) {
    record(input::Egress{ifindex});
    if (const auto it = facts_.refused.find(ifindex); it != facts_.refused.end()) return it->second;
    return "egress " + link_name(ifindex) + " is not a mapped interface that is up";
}

std::optional<nat::NatSubscriber> View::subscriber(const IpAddress& a) {
    record(input::Subscriber{a});
    const nat::NatView* n = nat();
    if (!n) return std::nullopt;
    return n->subscriber(a);
}

std::optional<std::uint32_t> View::adjacency(const AdjacencyKey& a, const AdjacencySignature& s) {
    auto id = adjacencies_.acquire(a, s);
    if (id && reads_) reads_->uses.push_back(a);
    return id;
}

}  // namespace dpo::compile

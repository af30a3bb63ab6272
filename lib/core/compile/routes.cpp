// SPDX-License-Identifier: GPL-2.0-or-later
// Group 3's routing (route lookup, set nexthop, lookup egress interface) and the tails
// of group 3 and 4 (rewrite MACs, decrement TTL, re-tag or encapsulate, send): one
// route, one connected host, one next hop at a time.
#include <algorithm>

#include "parts.hpp"

namespace dpo::compile {

namespace {

void to_kernel(tc::Rule r, KeyOutput& out) {
    r.actions = {tc::Pass{}};
    out.rules.push_back(std::move(r));
}

void finish_notes(KeyOutput& out) {
    std::sort(out.notes.begin(), out.notes.end());
    out.notes.erase(std::unique(out.notes.begin(), out.notes.end()), out.notes.end());
}

// How traffic of one ingress role leaves through `port`.
enum class Path : std::uint8_t { Plain, Nat, Refused };

// Inner -> outer with `nat` configured goes through the NAT stage; IPv4 cannot go
// without it (it would leave untranslated), IPv6 is never translated.
Path path_of(View& v, Role from, const EgressPort& port, Family f) {
    const bool through_nat = from == Role::Inner && port.role == Role::Outer && v.mapping().nat.has_value();
    if (!through_nat) return Path::Plain;
    if (v.nat()) return Path::Nat;
    return f == Family::V4 ? Path::Refused : Path::Plain;
}
const char* const kNeedsNat = "inner -> outer IPv4 needs NAT, and the NAT stage is not running";

AdjacencySignature signature(Family f, const EgressPort& port, const Mac& nexthop) {
    return AdjacencySignature{f, port.counter, nexthop, port.source};
}

// Toward an outer next hop through NAT: look the connection up (translating an
// established one) and continue by its state in the next hop's NAT chain; a new IPv4
// connection, committed into its subscriber's chunk, comes back through the outer-bound
// routes of 0x8001 to the next hop's own chain.
void through_nat(View& v, const IngressDevice& d, tc::Rule r, std::uint32_t id, KeyOutput& out) {
    const Family f = rule_family(r);
    r.actions = {ct_lookup(v.mapping().nat->zone, f), tc::Goto{d.base + kChainNatAdjacencyBase + id}};
    if (f == Family::V4) {
        tc::Rule after = chain_rule(d, kChainToOutside, r.prio, f, r.why + ", after NAT");
        after.match.dst_ip = r.match.dst_ip;
        after.actions = {tc::Goto{d.base + kChainAdjacencyBase + id}};
        out.rules.push_back(std::move(after));
    }
    out.rules.push_back(std::move(r));
}

}  // namespace

void compile_prefix(const PrefixKey& k, View& v, KeyOutput& out) {
    const IpPrefix& dst = k.prefix;
    const Route* rt = v.prefix_route(dst);
    if (!rt) return;
    if (never_routed(dst.address) && dst.length > 0) return;  // the Pipeline key's special destinations
    const Family f = dst.address.family;

    // What the route does, the same from every device and role (but for NAT).
    std::string left;  // why the route is left to the kernel
    const EgressPort* port = nullptr;
    const Neighbour* gateway = nullptr;
    const Nexthop* nh = nullptr;
    if (rt->type != kRtnUnicast) {
        left = "not a unicast route";
    } else if (rt->nexthops.size() != 1) {
        left = "multipath";
    } else {
        nh = &rt->nexthops.front();
        port = v.egress(nh->ifindex);
        if (!port) left = v.why_no_egress(nh->ifindex);
        else if (nh->gateway && !(gateway = v.resolved_gateway(nh->ifindex, *nh->gateway)))
            left = "gateway " + nh->gateway->str() + " unresolved";
    }
    std::optional<std::uint32_t> id;  // the next hop's, taken when first needed
    bool no_id = false;
    auto adjacency = [&]() -> std::optional<std::uint32_t> {
        if (!id && !no_id) {
            id = v.adjacency(AdjacencyKey{f, nh->ifindex, *nh->gateway}, signature(f, *port, *gateway->mac));
            no_id = !id;
        }
        return id;
    };

    for (const auto& d : v.facts().ingress) {
        if (!d) continue;
        for (Role role : roles_of(*d)) {
            auto r = chain_rule(*d, routing_chain(role, v.nat() != nullptr), route_prio(dst), f, "route " + dst.str());
            if (dst.length > 0) r.match.dst_ip = dst;  // a zero-length prefix is left unmatched
            auto leave = [&](const std::string& why) {
                out.notes.push_back("route " + dst.str() + ": " + why + ": left to the kernel");
                to_kernel(std::move(r), out);
            };
            if (!left.empty()) {
                leave(left);
                continue;
            }
            const Path path = path_of(v, role, *port, f);
            if (path == Path::Refused) {
                leave(kNeedsNat);
                continue;
            }
            // Directly connected: each resolved neighbour gets its own rule (a Host
            // key's); the rest of the prefix goes to the kernel, which resolves and
            // then tells us.
            if (!nh->gateway) {
                to_kernel(std::move(r), out);
                continue;
            }
            if (!adjacency()) {
                leave("no next-hop chain left (" + std::to_string(kMaxAdjacencies) + " in use)");
                continue;
            }
            if (path == Path::Nat) {
                through_nat(v, *d, std::move(r), *id, out);
                continue;
            }
            r.actions = {tc::Goto{d->base + kChainAdjacencyBase + *id}};
            out.rules.push_back(std::move(r));
        }
    }
    finish_notes(out);
}

// A resolved neighbour whose longest-prefix route is the connected route on its own
// device: forwarded to its MAC by a host rule that carries the tail itself.
void compile_host(const HostKey& k, View& v, KeyOutput& out) {
    const Neighbour* n = v.resolved(k.ifindex, k.address);
    if (!n || never_routed(k.address)) return;
    const Route* rt = v.lookup(k.address);
    if (!rt || rt->type != kRtnUnicast || rt->nexthops.size() != 1) return;
    const Nexthop& nh = rt->nexthops.front();
    if (nh.gateway || nh.ifindex != k.ifindex) return;
    const IpPrefix host = host_prefix(k.address);
    if (rt->destination.length == host.length) return;  // a host route of its own decides (a Prefix key)
    const EgressPort* port = v.egress(k.ifindex);
    if (!port) return;
    const Family f = k.address.family;
    for (const auto& d : v.facts().ingress) {
        if (!d) continue;
        for (Role role : roles_of(*d)) {
            const Path path = path_of(v, role, *port, f);
            if (path == Path::Refused) continue;
            auto r = chain_rule(*d, routing_chain(role, v.nat() != nullptr), route_prio(host), f,
                                "neighbour " + k.address.str() + " on " + port->netdev);
            r.match.dst_ip = host;
            if (path == Path::Nat) {
                // The NAT chain of this host as a next hop: its connection states.
                const auto id = v.adjacency(AdjacencyKey{f, k.ifindex, k.address}, signature(f, *port, *n->mac));
                if (!id) continue;
                through_nat(v, *d, std::move(r), *id, out);
                continue;
            }
            r.actions = forwarding_tail(f, d->tagged, *port, *n->mac);
            out.rules.push_back(std::move(r));
        }
    }
}

// One next hop's chains on every routing device: its tail, and through NAT its
// connection states.
void compile_adjacency(const AdjacencyKey& k, View& v, KeyOutput& out) {
    const auto id = v.adjacency_id(k);
    if (!id) return;
    const Neighbour* n = v.resolved(k.egress, k.nexthop);
    const EgressPort* port = v.egress(k.egress);
    if (!n || !port) return;  // its users stop using it in the same pass
    const nat::NatView* nat = v.nat();
    const std::string toward = "toward " + port->name + " via " + k.nexthop.str() + " (" + mac_str(*n->mac) + ")";
    for (const auto& d : v.facts().ingress) {
        if (!d || !d->routes()) continue;
        const auto tail = forwarding_tail(k.family, d->tagged, *port, *n->mac);
        auto r = chain_rule(*d, kChainAdjacencyBase + *id, kPrioAdjacency, k.family, "next hop " + toward);
        r.actions = tail;
        out.rules.push_back(std::move(r));
        if (nat && port->role == Role::Outer && d->inner)
            nat_adjacency_chain(*d, v.mapping().nat->zone, *id, k.family, tail, toward, out);
    }
}

}  // namespace dpo::compile

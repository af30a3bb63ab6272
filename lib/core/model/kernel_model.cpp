// SPDX-License-Identifier: GPL-2.0-or-later
#include "kernel_model.hpp"

#include <set>

#include "core/gcc_workarounds.hpp"

namespace dpo::model {

std::size_t hash_of(const IpAddress& a) noexcept {
    // FNV-1a over the bytes that count; the family keeps 10.0.0.1 and ::a00:1 apart.
    std::uint64_t h = 0xcbf29ce484222325ULL ^ static_cast<std::uint8_t>(a.family);
    for (std::size_t i = 0; i < a.size(); ++i) {
        h ^= a.bytes[i];
        h *= 0x100000001b3ULL;
    }
    return static_cast<std::size_t>(h ^ (h >> 29));
}

std::size_t KernelModel::NeighbourKeyHash::operator()(const NeighbourKey& k) const noexcept {
    return hash_of(k.address) * 31 + static_cast<std::size_t>(k.ifindex);
}

std::size_t KernelModel::AddressHash::operator()(const IpAddress& a) const noexcept { return hash_of(a); }

KernelModel::KernelModel(const KernelState& s) { (void)resync(s); }

const Link* KernelModel::link(int ifindex) const {
    const auto it = links_.find(ifindex);
    return it == links_.end() ? nullptr : &it->second;
}

const Link* KernelModel::link_named(std::string_view name) const {
    const auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : link(it->second);
}

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::string KernelModel::link_name(int ifindex) const {
    const Link* l = link(ifindex);
    return l ? l->name : "#" + std::to_string(ifindex);
}
DPO_GCC_WARNING_ON

const RouteTable& KernelModel::table(std::uint32_t id) const {
    static const RouteTable kEmpty;
    const auto it = tables_.find(id);
    return it == tables_.end() ? kEmpty : it->second;
}

const Neighbour* KernelModel::neighbour(int ifindex, const IpAddress& a) const {
    const auto it = neighbours_.find(NeighbourKey{ifindex, a});
    return it == neighbours_.end() ? nullptr : &it->second;
}

std::optional<Change> KernelModel::apply(const Event& e) {
    return std::visit(
        [this](const auto& ev) -> std::optional<Change> {
            using T = std::decay_t<decltype(ev)>;
            if constexpr (std::is_same_v<T, LinkEvent>) return apply_link(ev);
            else if constexpr (std::is_same_v<T, AddressEvent>) return apply_address(ev);
            else if constexpr (std::is_same_v<T, RouteEvent>) return apply_route(ev);
            else return apply_neighbour(ev);
        },
        e);
}

std::optional<Change> KernelModel::apply_link(const LinkEvent& e) {
    LinkChange c{e.ifindex, std::nullopt, std::nullopt};
    const auto it = links_.find(e.ifindex);
    if (it != links_.end()) {
        c.before = it->second;
        // A rename frees the old name, unless another link took it already.
        const auto n = by_name_.find(it->second.name);
        if (n != by_name_.end() && n->second == e.ifindex) by_name_.erase(n);
    }
    if (e.link) {
        Link l = *e.link;
        l.ifindex = e.ifindex;
        by_name_[l.name] = e.ifindex;
        c.after = l;
        links_[e.ifindex] = std::move(l);
    } else if (it != links_.end()) {
        links_.erase(it);
    }
    if (c.before == c.after) return std::nullopt;
    return c;
}

std::optional<Change> KernelModel::apply_address(const AddressEvent& e) {
    const Address& a = e.address;
    const IpAddress& ip = a.prefix.address;
    AddressChange c{ip, is_local(ip), false};
    const auto key = std::make_pair(a.ifindex, a.prefix);
    if (e.removed) {
        if (addresses_.erase(key) == 0) return std::nullopt;
        if (auto it = local_.find(ip); it != local_.end() && --it->second == 0) local_.erase(it);
    } else {
        if (!addresses_.emplace(key, a).second) return std::nullopt;
        ++local_[ip];
    }
    c.local_after = is_local(ip);
    // Only whether the address is the host's matters downstream; another device
    // getting an address the host has already changes nothing there.
    if (c.local_before == c.local_after) return std::nullopt;
    return c;
}

std::optional<Change> KernelModel::apply_route(const RouteEvent& e) {
    const Route& r = e.route;
    if (e.removed) {
        const auto t = tables_.find(r.table);
        if (t == tables_.end()) return std::nullopt;
        auto change = t->second.remove(RouteId::of(r));
        if (t->second.size() == 0) tables_.erase(t);
        if (!change.best_changed()) return std::nullopt;
        return RouteChange{r.table, change.prefix, std::move(change.before), std::move(change.after)};
    }
    auto change = tables_[r.table].upsert(r);
    if (!change.best_changed()) return std::nullopt;
    return RouteChange{r.table, change.prefix, std::move(change.before), std::move(change.after)};
}

std::optional<Change> KernelModel::apply_neighbour(const NeighbourEvent& e) {
    const Neighbour& n = e.neighbour;
    const NeighbourKey key{n.ifindex, n.address};
    NeighbourChange c{n.ifindex, n.address, std::nullopt, std::nullopt};
    const auto it = neighbours_.find(key);
    if (it != neighbours_.end()) c.before = it->second;
    if (e.removed) {
        if (it == neighbours_.end()) return std::nullopt;
        neighbours_.erase(it);
    } else {
        c.after = n;
        neighbours_[key] = n;
    }
    if (c.before == c.after) return std::nullopt;
    return c;
}

std::vector<Change> KernelModel::resync(const KernelState& s) {
    std::vector<Change> out;
    auto keep = [&](std::optional<Change> c) {
        if (c) out.push_back(std::move(*c));
    };
    // Removals first (what the snapshot no longer has), then everything it has: an
    // object that did not change produces no change.
    std::set<int> link_now;
    for (const auto& [ifindex, _] : s.links) link_now.insert(ifindex);
    std::vector<int> gone_links;
    for (const auto& [ifindex, _] : links_)
        if (!link_now.count(ifindex)) gone_links.push_back(ifindex);
    for (int ifindex : gone_links) keep(apply_link({ifindex, std::nullopt}));

    std::set<std::pair<int, IpPrefix>> addr_now;
    for (const auto& a : s.addresses) addr_now.insert({a.ifindex, a.prefix});
    std::vector<Address> gone_addrs;
    for (const auto& [key, a] : addresses_)
        if (!addr_now.count(key)) gone_addrs.push_back(a);
    for (const auto& a : gone_addrs) keep(apply_address({a, true}));

    std::set<std::pair<std::uint32_t, RouteId>> route_now;
    for (const auto& r : s.routes) route_now.insert({r.table, RouteId::of(r)});
    std::vector<Route> gone_routes;
    for (const auto& [id, t] : tables_)
        // A copy of `id`: clang before 16 (Debian 12's clang 14 builds fuzz/) cannot
        // capture a structured binding.
        t.for_each([&, table = id](const Route& r) {
            if (!route_now.count({table, RouteId::of(r)})) gone_routes.push_back(r);
        });
    for (const auto& r : gone_routes) keep(apply_route({r, true}));

    std::unordered_map<NeighbourKey, bool, NeighbourKeyHash> neigh_now;
    for (const auto& n : s.neighbours) neigh_now.emplace(NeighbourKey{n.ifindex, n.address}, true);
    std::vector<Neighbour> gone_neigh;
    for (const auto& [key, n] : neighbours_)
        if (!neigh_now.count(key)) gone_neigh.push_back(n);
    for (const auto& n : gone_neigh) keep(apply_neighbour({n, true}));

    for (const auto& [ifindex, l] : s.links) keep(apply_link({ifindex, l}));
    for (const auto& a : s.addresses) keep(apply_address({a, false}));
    for (const auto& r : s.routes) keep(apply_route({r, false}));
    for (const auto& n : s.neighbours) keep(apply_neighbour({n, false}));
    return out;
}

KernelState KernelModel::snapshot() const {
    KernelState s;
    s.links = links_;
    for (const auto& [_, a] : addresses_) s.addresses.push_back(a);
    for (const auto& [_, t] : tables_) t.for_each([&](const Route& r) { s.routes.push_back(r); });
    for (const auto& [_, n] : neighbours_) s.neighbours.push_back(n);
    return s;
}

}  // namespace dpo::model

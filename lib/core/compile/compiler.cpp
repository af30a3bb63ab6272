// SPDX-License-Identifier: GPL-2.0-or-later
#include "compiler.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "parts.hpp"

namespace dpo::compile {

namespace {

std::size_t mix(std::size_t h, std::size_t v) { return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)); }

struct KeyHasher {
    std::size_t operator()(const DevicesKey&) const { return 1; }
    std::size_t operator()(const ClassifyKey& k) const { return mix(2, k.interface); }
    std::size_t operator()(const PipelineKey& k) const { return mix(3, static_cast<std::size_t>(k.dev)); }
    std::size_t operator()(const LocalAddressKey& k) const { return mix(4, model::hash_of(k.address)); }
    std::size_t operator()(const PrefixKey& k) const { return mix(mix(5, model::hash_of(k.prefix.address)), k.prefix.length); }
    std::size_t operator()(const HostKey& k) const {
        return mix(mix(6, model::hash_of(k.address)), static_cast<std::size_t>(k.ifindex));
    }
    std::size_t operator()(const AdjacencyKey& k) const {
        return mix(mix(mix(7, model::hash_of(k.nexthop)), static_cast<std::size_t>(k.egress)),
                   static_cast<std::size_t>(k.family));
    }
    std::size_t operator()(const SubscriberKey& k) const { return mix(8, model::hash_of(k.address)); }
    std::size_t operator()(const PuntKey&) const { return 9; }
};

struct KeyText {
    std::string operator()(const DevicesKey&) const { return "devices"; }
    std::string operator()(const ClassifyKey& k) const { return "classify interface #" + std::to_string(k.interface); }
    std::string operator()(const PipelineKey& k) const {
        return std::string("pipeline ") + (k.dev == IngressDev::Uplink ? "uplink" : "vxlan");
    }
    std::string operator()(const LocalAddressKey& k) const { return "local address " + k.address.str(); }
    std::string operator()(const PrefixKey& k) const { return "route " + k.prefix.str(); }
    std::string operator()(const HostKey& k) const {
        return "host " + k.address.str() + " on #" + std::to_string(k.ifindex);
    }
    std::string operator()(const AdjacencyKey& k) const {
        return "next hop " + k.nexthop.str() + " on #" + std::to_string(k.egress) +
               (k.family == Family::V4 ? " (ipv4)" : " (ipv6)");
    }
    std::string operator()(const SubscriberKey& k) const { return "subscriber " + k.address.str(); }
    std::string operator()(const PuntKey&) const { return "punt"; }
};

}  // namespace

std::size_t KeyHash::operator()(const Key& k) const noexcept { return mix(k.index(), std::visit(KeyHasher{}, k)); }

std::string describe(const Key& k) { return std::visit(KeyText{}, k); }

void compile_key(const Key& key, View& v, KeyOutput& out) {
    out.clear();
    std::visit(
        [&](const auto& k) {
            using T = std::decay_t<decltype(k)>;
            if constexpr (std::is_same_v<T, DevicesKey>) compile_devices(v, out);
            else if constexpr (std::is_same_v<T, ClassifyKey>) compile_classify(k, v, out);
            else if constexpr (std::is_same_v<T, PipelineKey>) compile_pipeline(k, v, out);
            else if constexpr (std::is_same_v<T, LocalAddressKey>) compile_local_address(k, v, out);
            else if constexpr (std::is_same_v<T, PrefixKey>) compile_prefix(k, v, out);
            else if constexpr (std::is_same_v<T, HostKey>) compile_host(k, v, out);
            else if constexpr (std::is_same_v<T, AdjacencyKey>) compile_adjacency(k, v, out);
            else if constexpr (std::is_same_v<T, SubscriberKey>) compile_subscriber(k, v, out);
            else compile_punt(v, out);
        },
        key);
}

std::vector<Key> all_keys(const Mapping& m, const model::KernelModel& k, const nat::NatView* nat) {
    std::vector<Key> keys;
    keys.emplace_back(DevicesKey{});
    for (std::uint32_t i = 0; i < m.interfaces.size(); ++i) keys.emplace_back(ClassifyKey{i});
    keys.emplace_back(PipelineKey{IngressDev::Uplink});
    keys.emplace_back(PipelineKey{IngressDev::Vxlan});
    std::set<IpAddress> local;
    for (const auto& [_, a] : k.addresses()) local.insert(a.prefix.address);
    for (const auto& a : local) keys.emplace_back(LocalAddressKey{a});
    std::vector<IpPrefix> prefixes;
    k.table(m.route_table).for_each_best([&](const Route& r) { prefixes.push_back(r.destination); });
    std::sort(prefixes.begin(), prefixes.end());
    for (const auto& p : prefixes) keys.emplace_back(PrefixKey{p});
    std::vector<HostKey> hosts;
    k.for_each_neighbour([&](const Neighbour& n) { hosts.push_back(HostKey{n.ifindex, n.address}); });
    std::sort(hosts.begin(), hosts.end());
    keys.insert(keys.end(), hosts.begin(), hosts.end());
    if (nat) {
        auto subs = nat->subscribers();
        std::sort(subs.begin(), subs.end());
        for (const auto& s : subs) keys.emplace_back(SubscriberKey{s});
    }
    keys.emplace_back(PuntKey{});
    return keys;
}

Program compile(const Mapping& m, const KernelState& k, const NatState* nat, Adjacencies* adjacencies) {
    const model::KernelModel model(k);
    const Facts facts = compute_facts(m, model);
    std::optional<nat::NatStateView> nat_view;
    if (nat) nat_view.emplace(*nat);
    const nat::NatView* nv = nat_view ? &*nat_view : nullptr;
    Adjacencies fresh(kMaxAdjacencies);
    Adjacencies& ids = adjacencies ? *adjacencies : fresh;
    Reads reads;
    View view(m, model, facts, nv, ids, &reads);

    Program p;
    KeyOutput out;
    std::set<AdjacencyKey> used;
    auto take = [&](const Key& key) {
        reads.clear();
        compile_key(key, view, out);
        std::move(out.rules.begin(), out.rules.end(), std::back_inserter(p.rules));
        std::move(out.notes.begin(), out.notes.end(), std::back_inserter(p.notes));
        used.insert(reads.uses.begin(), reads.uses.end());
    };
    for (const Key& key : all_keys(m, model, nv)) take(key);
    for (const AdjacencyKey& a : used) take(a);

    // Sorted by place, then identity: the order is for people and golden tests.
    std::sort(p.rules.begin(), p.rules.end(), [](const tc::Rule& x, const tc::Rule& y) {
        return std::tie(x.dev, x.chain, x.prio, x.protocol, x.match) < std::tie(y.dev, y.chain, y.prio, y.protocol, y.match);
    });
    std::sort(p.notes.begin(), p.notes.end());
    p.notes.erase(std::unique(p.notes.begin(), p.notes.end()), p.notes.end());
    return p;
}

NatState nat_state_from(const std::vector<tc::Rule>& installed) {
    NatState out;
    std::map<IpAddress, NatSubscriber> subs;
    for (const auto& r : installed) {
        for (const auto& a : r.actions)
            if (const auto* m = std::get_if<tc::Redirect>(&a); m && m->index == kPuntIndex) {
                out.punt_ifindex = m->ifindex;
                out.punt_dev = m->dev;
            }
        const bool new_conn = r.match.ct_state && (r.match.ct_state->value & tc::kCtNew);
        if (!new_conn || !r.match.src_ip || r.match.src_ip->length != 32 || r.actions.empty()) continue;
        const IpAddress who = r.match.src_ip->address;
        if (const auto* ct = std::get_if<tc::Ct>(&r.actions.front()); ct && ct->commit && ct->snat) {
            subs[who] = NatSubscriber{who, nat::ChunkPorts{ct->snat->min, ct->snat->port_min, ct->snat->port_max},
                                      nat::Refusal::ChunkLimit};
        } else if (const auto* d = std::get_if<tc::Drop>(&r.actions.front());
                   d && (d->index == kDropChunkLimit || d->index == kDropPoolEmpty)) {
            subs.try_emplace(who, NatSubscriber{who, std::nullopt,
                                                d->index == kDropPoolEmpty ? nat::Refusal::PoolEmpty
                                                                           : nat::Refusal::ChunkLimit});
        }
    }
    for (auto& [_, s] : subs) out.subscribers.push_back(std::move(s));
    return out;
}

void reserve_adjacency(Adjacencies& a, const tc::Rule& r) {
    if (r.prio != kPrioAdjacency) return;
    const std::uint32_t chain = r.chain >= kChainVxlanBase ? r.chain - kChainVxlanBase : r.chain;
    if (chain < kChainAdjacencyBase || chain >= kChainAdjacencyBase + kMaxAdjacencies) return;
    AdjacencySignature s;
    s.family = rule_family(r);
    bool rewrite = false, redirect = false;
    for (const auto& act : r.actions) {
        if (const auto* rw = std::get_if<tc::Rewrite>(&act); rw && rw->eth_dst && rw->eth_src) {
            s.nexthop = *rw->eth_dst;
            s.source = *rw->eth_src;
            rewrite = true;
        } else if (const auto* m = std::get_if<tc::Redirect>(&act)) {
            s.counter = m->index;
            redirect = true;
        }
    }
    if (rewrite && redirect) a.reserve(chain - kChainAdjacencyBase, s);
}

void reserve_adjacencies(Adjacencies& a, const std::vector<tc::Rule>& installed) {
    for (const auto& r : installed) reserve_adjacency(a, r);
}

std::vector<std::string> rule_devices(const Mapping& m) {
    std::vector<std::string> devs{m.uplink};
    if (m.vxlan) devs.push_back(m.vxlan->device);
    return devs;
}

}  // namespace dpo::compile

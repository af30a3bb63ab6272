// SPDX-License-Identifier: GPL-2.0-or-later
// The incremental engine against its oracle: after any sequence of events, the rules it
// wants are the full compile of the same state, and the (fake) kernel holds exactly
// them. Random sequences, seeded; a failure prints the seed and the step.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>

#include "core/compile/pipeline.hpp"
#include "core/engine/engine.hpp"
#include "core/mapping_loader.hpp"
#include "fake_kernel.hpp"

using namespace dpo;
using engine::Time;
using std::chrono::milliseconds;

namespace {

Mapping parse(const std::string& text) {
    auto r = parse_mapping(text, "m.json");
    REQUIRE(r.ok());
    return *r;
}

const char* const kVlan = R"({"uplink": "p0", "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})";
const char* const kVlanNat = R"({"uplink": "p0", "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}],
    "nat": {"zone": 7, "pool": ["198.51.100.0/28"]}})";
const char* const kVxlanNat = R"({"uplink": "p0",
    "vxlan": {"device": "vxlan0", "port": 4789},
    "aci": {"vlan": 2, "local_vtep": "10.0.2.1"},
    "evpn": {"local_vtep": "10.0.1.1"},
    "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "green", "netdev": "svi-green", "role": "inner", "evpn": {"vni": 5001, "remote_vtep": "10.0.1.2"}},
    {"name": "web", "netdev": "svi-web", "role": "inner", "aci": {"vni": 6001, "remote_vtep": "10.0.2.10"}},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}],
    "nat": {"zone": 7, "pool": ["198.51.100.0/28"]}})";

Mac mac(std::uint8_t a, std::uint8_t b) { return {2, 0, 0, 0, a, b}; }
IpAddress ip(const char* t) { return *IpAddress::parse(t); }
IpPrefix pfx(const char* t) { return *IpPrefix::parse(t); }

// A NAT stage the test changes at will.
class FakeNat final : public nat::NatView {
public:
    int punt = 42;
    std::map<IpAddress, nat::NatSubscriber> subs;
    int punt_ifindex() const override { return punt; }
    std::string punt_dev() const override { return "dpo-inject"; }
    std::string punt_sink_dev() const override { return "dpo-punt"; }
    std::optional<nat::NatSubscriber> subscriber(const IpAddress& a) const override {
        const auto it = subs.find(a);
        if (it == subs.end()) return std::nullopt;
        return it->second;
    }
    std::vector<IpAddress> subscribers() const override {
        std::vector<IpAddress> out;
        for (const auto& [a, _] : subs) out.push_back(a);
        return out;
    }
    nat::NatState state() const {
        nat::NatState s;
        s.punt_ifindex = punt;
        s.punt_dev = punt_dev();
        s.punt_sink_dev = punt_sink_dev();
        for (const auto& [_, v] : subs) s.subscribers.push_back(v);
        return s;
    }
};

// The test's own copy of the kernel (the oracle's input), changed by the same events
// the engine gets.
struct World {
    KernelState k;
    test::FakeKernel tc;
    FakeNat nat;
    bool nat_on = false;

    void link(int ifindex, const char* name, const char* kind, int parent, std::uint16_t vid, Mac m) {
        Link l;
        l.ifindex = ifindex;
        l.name = name;
        l.kind = kind;
        l.parent_ifindex = parent;
        if (vid) l.vlan_id = vid;
        l.mac = m;
        l.up = true;
        k.links[ifindex] = l;
    }

    World() {
        link(2, "p0", "", 0, 0, mac(0, 1));
        link(3, "p0.100", "vlan", 2, 100, mac(0x10, 0));
        link(4, "p0.101", "vlan", 2, 101, mac(0x10, 1));
        link(5, "p0.200", "vlan", 2, 200, mac(0x20, 0));
        link(6, "eth0", "", 0, 0, mac(0xee, 0));
        link(7, "p0.2", "vlan", 2, 2, mac(0x02, 1));
        link(8, "vxlan0", "vxlan", 0, 0, mac(0xaa, 0));
        link(10, "svi-green", "vlan", 9, 10, mac(0x50, 1));
        link(11, "svi-web", "vlan", 9, 20, mac(0x60, 1));
        link(42, "dpo-inject", "veth", 43, 0, mac(0xd0, 1));
        link(43, "dpo-punt", "veth", 42, 0, mac(0xd0, 2));
        for (const auto& [i, l] : k.links) tc.ifindex[l.name] = i;
        for (const auto& [dev, a] : std::vector<std::pair<int, const char*>>{
                 {3, "10.100.0.1/24"}, {4, "10.101.0.1/24"}, {5, "10.200.0.1/24"}, {3, "fd00:100::1/64"},
                 {5, "fd00:200::1/64"}})
            k.addresses.push_back({dev, pfx(a)});
        k.addresses.push_back({2, pfx("10.0.1.1/24")});
        k.addresses.push_back({7, pfx("10.0.2.1/24")});
        k.addresses.push_back({10, pfx("10.1.0.1/24")});
        k.addresses.push_back({11, pfx("10.2.0.1/24")});
        connected("10.100.0.0/24", 3);
        connected("10.101.0.0/24", 4);
        connected("10.200.0.0/24", 5);
        connected("fd00:100::/64", 3);
        connected("fd00:200::/64", 5);
        connected("10.0.1.0/24", 2);
        connected("10.0.2.0/24", 7);
        connected("10.1.0.0/24", 10);
        connected("10.2.0.0/24", 11);
        via("0.0.0.0/0", "10.200.0.254", 5);
        via("::/0", "fd00:200::fe", 5);
        neighbour(3, "10.100.0.2", mac(1, 2));
        neighbour(5, "10.200.0.254", mac(2, 0xfe));
        neighbour(5, "fd00:200::fe", mac(2, 0xfe));
        neighbour(2, "10.0.1.2", mac(0xfa, 2));
        neighbour(7, "10.0.2.10", mac(0xfa, 0x0a));
        neighbour(10, "10.1.0.2", mac(5, 2));
    }

    void connected(const char* dst, int ifindex) {
        Route r;
        r.destination = pfx(dst);
        r.table = 254;
        r.type = 1;
        r.nexthops = {{std::nullopt, ifindex}};
        k.routes.push_back(r);
    }
    void via(const char* dst, const char* gw, int ifindex) {
        Route r;
        r.destination = pfx(dst);
        r.table = 254;
        r.type = 1;
        r.nexthops = {{ip(gw), ifindex}};
        k.routes.push_back(r);
    }
    void neighbour(int ifindex, const char* a, std::optional<Mac> m) {
        Neighbour n;
        n.ifindex = ifindex;
        n.address = ip(a);
        n.mac = m;
        n.state = m ? NeighbourState::Resolved : NeighbourState::Unresolved;
        k.neighbours.push_back(n);
    }

    // Each change goes to both: the copy and the engine.
    void route(engine::Engine& e, Time now, const Route& r, bool removed) {
        const auto same = [&](const Route& x) {
            return x.table == r.table && x.destination == r.destination && x.tos == r.tos && x.priority == r.priority;
        };
        k.routes.erase(std::remove_if(k.routes.begin(), k.routes.end(), same), k.routes.end());
        if (!removed) k.routes.push_back(r);
        e.kernel(model::RouteEvent{r, removed}, now);
    }
    void neigh(engine::Engine& e, Time now, const Neighbour& n, bool removed) {
        const auto same = [&](const Neighbour& x) { return x.ifindex == n.ifindex && x.address == n.address; };
        k.neighbours.erase(std::remove_if(k.neighbours.begin(), k.neighbours.end(), same), k.neighbours.end());
        if (!removed) k.neighbours.push_back(n);
        e.kernel(model::NeighbourEvent{n, removed}, now);
    }
    void set_link(engine::Engine& e, Time now, int ifindex, std::optional<Link> l) {
        if (l) {
            k.links[ifindex] = *l;
            tc.ifindex[l->name] = ifindex;
        } else {
            const auto it = k.links.find(ifindex);
            if (it != k.links.end()) {
                // The device goes, and its filters and qdisc with it.
                tc.ifindex.erase(it->second.name);
                tc.clsact.erase(ifindex);
                for (auto f = tc.filters.begin(); f != tc.filters.end();)
                    f = f->first.first == ifindex ? tc.filters.erase(f) : std::next(f);
                k.links.erase(it);
            }
        }
        e.kernel(model::LinkEvent{ifindex, l}, now);
    }
    void address(engine::Engine& e, Time now, const Address& a, bool removed) {
        const auto same = [&](const Address& x) { return x.ifindex == a.ifindex && x.prefix == a.prefix; };
        k.addresses.erase(std::remove_if(k.addresses.begin(), k.addresses.end(), same), k.addresses.end());
        if (!removed) k.addresses.push_back(a);
        e.kernel(model::AddressEvent{a, removed}, now);
    }
};

// Runs the engine until it has nothing due within a minute (retries back off up to
// 30 s; the periodic audit is minutes away), advancing a virtual clock; the number of
// flushes that did work.
int settle(engine::Engine& e, Time& now, std::vector<engine::Pass>* passes = nullptr) {
    int work = 0;
    for (int i = 0; i < 10000; ++i) {
        const auto due = e.next_due(now);
        if (!due || *due > now + std::chrono::seconds(60)) return work;
        if (*due > now) now = *due;
        auto p = e.flush(now);
        if (p.did_work()) ++work;
        if (passes) passes->push_back(std::move(p));
    }
    FAIL("the engine never settles");
    return work;
}

std::map<tc::Identity, std::uint64_t> oracle(const Mapping& m, const World& w, const engine::Engine& e) {
    compile::Adjacencies ids = e.adjacencies();
    const nat::NatState ns = w.nat.state();
    const auto p = compile::compile(m, w.k, w.nat_on ? &ns : nullptr, &ids);
    std::map<tc::Identity, std::uint64_t> out;
    for (const auto& r : p.rules) out.emplace(r.identity(), tc::content_hash(r));
    return out;
}

// What the fake kernel holds of ours, by identity.
std::map<tc::Identity, std::uint64_t> installed(const World& w) {
    std::map<int, std::string> names;
    for (const auto& [n, i] : w.tc.ifindex) names[i] = n;
    std::map<tc::Identity, std::uint64_t> out;
    for (const auto& [key, f] : w.tc.filters) {
        if (!f.owned) continue;
        tc::Rule r = f.rule;
        r.dev = names[key.first];
        out.emplace(r.identity(), tc::content_hash(r));
    }
    return out;
}

std::string diff(const std::map<tc::Identity, std::uint64_t>& want, const std::map<tc::Identity, std::uint64_t>& got) {
    std::ostringstream s;
    int n = 0;
    for (const auto& [id, h] : want) {
        const auto it = got.find(id);
        if (it == got.end()) s << "  missing: " << tc::Rule{id.dev, id.chain, id.prio, id.protocol, id.match, {}, ""}.key() << "\n";
        else if (it->second != h) s << "  differs: " << tc::Rule{id.dev, id.chain, id.prio, id.protocol, id.match, {}, ""}.key() << "\n";
        else continue;
        if (++n > 8) break;
    }
    for (const auto& [id, _] : got)
        if (!want.count(id) && n++ < 16)
            s << "  extra: " << tc::Rule{id.dev, id.chain, id.prio, id.protocol, id.match, {}, ""}.key() << "\n";
    return s.str();
}

}  // namespace

TEST_CASE("engine: the first pass installs the full compile, and a restart adopts it without a change") {
    World w;
    const Mapping m = parse(kVlan);
    Time now{};
    engine::Engine e(m, w.tc);
    e.start(w.k, now);
    std::vector<engine::Pass> passes;
    settle(e, now, &passes);
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
    CHECK(diff(e.desired(), installed(w)) == "");
    REQUIRE(!passes.empty());
    CHECK(passes.front().start);
    CHECK(passes.front().added == e.desired().size());
    // Nothing of ours was there: the rules went in unobserved (no echo, nobody listening,
    // half the kernel's work), then a terse dump said where they are.
    CHECK(w.tc.observed);
    CHECK(w.tc.terse_dumps == 1);  // p0, the one device of this mapping
    CHECK(e.counts().not_in_hw == e.counts().installed);

    // A second daemon on the same kernel: one dump, nothing sent.
    const auto changes_before = w.tc.changes;
    engine::Engine again(m, w.tc);
    again.start(w.k, now);
    passes.clear();
    settle(again, now, &passes);
    CHECK(w.tc.changes == changes_before);
    CHECK(again.desired() == e.desired());
    CHECK(again.counts().installed == again.counts().rules);
}

TEST_CASE("engine: a route change costs its own rules, no dump, and the oracle agrees") {
    World w;
    const Mapping m = parse(kVlanNat);
    Time now{};
    engine::Engine e(m, w.tc);
    w.nat_on = true;
    e.nat_stage(&w.nat, now);
    e.start(w.k, now);
    settle(e, now);
    const auto dumps = w.tc.dumps;
    const auto changes = w.tc.changes;

    Route r;
    r.destination = pfx("172.16.5.0/24");
    r.table = 254;
    r.type = 1;
    r.nexthops = {{ip("10.200.0.254"), 5}};  // outer-bound through NAT: 0x100, 0x8001, 0x201
    w.route(e, now, r, false);
    settle(e, now);
    CHECK(w.tc.dumps == dumps);
    CHECK(w.tc.changes - changes == 3);
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
    CHECK(diff(e.desired(), installed(w)) == "");

    w.route(e, now, r, true);
    settle(e, now);
    CHECK(w.tc.changes - changes == 6);
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
    CHECK(diff(e.desired(), installed(w)) == "");
}

TEST_CASE("engine: a gateway's new MAC changes its next hop's chains, not the routes through it") {
    World w;
    const Mapping m = parse(kVlanNat);
    for (int i = 0; i < 500; ++i) {
        Route r;
        r.destination = IpPrefix{IpAddress::v4(0xac100000u + (static_cast<std::uint32_t>(i) << 8)), 24};
        r.table = 254;
        r.type = 1;
        r.nexthops = {{ip("10.200.0.254"), 5}};
        w.k.routes.push_back(r);
    }
    Time now{};
    engine::Engine e(m, w.tc);
    w.nat_on = true;
    e.nat_stage(&w.nat, now);
    e.start(w.k, now);
    settle(e, now);
    const auto changes = w.tc.changes;
    Neighbour gw;
    gw.ifindex = 5;
    gw.address = ip("10.200.0.254");
    gw.mac = mac(0x77, 0x77);
    gw.state = NeighbourState::Resolved;
    w.neigh(e, now, gw, false);
    std::vector<engine::Pass> passes;
    settle(e, now, &passes);
    // Its forwarding chain, its NAT chain's est and rel rules, and its own host rule in
    // the outer chain (the host rules in 0x100 and 0x8001 jump to the chains).
    CHECK(w.tc.changes - changes == 4);
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
    CHECK(diff(e.desired(), installed(w)) == "");
    // The NUD state moving (STALE, DELAY, REACHABLE) is no change at all.
    gw.nud = 0x04;
    w.neigh(e, now, gw, false);
    passes.clear();
    settle(e, now, &passes);
    CHECK(w.tc.changes - changes == 4);
    for (const auto& p : passes) CHECK(p.keys == 0);
}

TEST_CASE("engine: a first packet's subscriber goes through the urgent lane, ahead of route churn") {
    World w;
    const Mapping m = parse(kVlanNat);
    Time now{};
    engine::Options o;
    o.slice_keys = 100;
    engine::Engine e(m, w.tc, o);
    w.nat_on = true;
    e.nat_stage(&w.nat, now);
    e.start(w.k, now);
    settle(e, now);
    // A burst of route changes, then a first packet.
    for (int i = 0; i < 1000; ++i) {
        Route r;
        r.destination = IpPrefix{IpAddress::v4(0xac100000u + (static_cast<std::uint32_t>(i) << 8)), 24};
        r.table = 254;
        r.type = 1;
        r.nexthops = {{ip("10.100.0.2"), 3}};
        w.route(e, now, r, false);
    }
    const IpAddress sub = ip("10.100.0.7");
    w.nat.subs[sub] = nat::NatSubscriber{sub, nat::ChunkPorts{ip("198.51.100.3"), 1024, 1535}};
    e.subscribers({sub}, true, now);
    const auto changes = w.tc.changes;
    auto p = e.flush(now);
    CHECK(p.urgent);
    CHECK(p.keys == 1);
    CHECK(w.tc.changes - changes == 1);
    CHECK(e.in_step(compile::SubscriberKey{sub}));
    // The churn follows in slices.
    std::vector<engine::Pass> passes;
    settle(e, now, &passes);
    CHECK(passes.size() >= 10);
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
    CHECK(diff(e.desired(), installed(w)) == "");
}

TEST_CASE("engine: rules deleted or replaced by someone else, or the qdisc, are put back without a dump") {
    World w;
    const Mapping m = parse(kVlan);
    Time now{};
    engine::Engine e(m, w.tc);
    e.start(w.k, now);
    settle(e, now);
    const auto dumps = w.tc.dumps;
    const auto [some, filter] = *std::next(w.tc.filters.begin(), 7);
    w.tc.foreign_delete(some.first, some.second);
    tc::Rule other = filter.rule;
    const auto [another, _] = *std::next(w.tc.filters.begin(), 11);
    other.actions = {tc::Drop{}};
    w.tc.foreign_replace(another.first, another.second, other);
    e.tc_events(w.tc.poll_events(), now);
    settle(e, now);
    CHECK(diff(e.desired(), installed(w)) == "");
    CHECK(w.tc.dumps == dumps);

    // Every rule's hardware state is known again (the fake kernel echoes not_in_hw).
    CHECK(e.counts().not_in_hw == e.counts().installed);

    w.tc.foreign_qdisc_delete(2);
    e.tc_events(w.tc.poll_events(), now);
    settle(e, now);
    CHECK(w.tc.clsact.count(2));
    CHECK(diff(e.desired(), installed(w)) == "");
    CHECK(w.tc.dumps == dumps);
    CHECK(e.counts().installed == e.counts().rules);
    CHECK(e.counts().not_in_hw == e.counts().installed);
}

TEST_CASE("engine: lost answers and notification overruns end in an audit that repairs, then finds nothing") {
    World w;
    const Mapping m = parse(kVlan);
    Time now{};
    engine::Engine e(m, w.tc);
    std::mt19937 rng(7);
    w.tc.lose = [&](const program::Change&) { return rng() % 5 == 0; };
    e.start(w.k, now);
    settle(e, now);
    w.tc.lose = nullptr;
    settle(e, now);
    CHECK(diff(e.desired(), installed(w)) == "");

    // Lost, but not applied: the audit finds them missing and sends them again.
    w.tc.apply_lost_changes = false;
    w.tc.lose = [&](const program::Change&) { return rng() % 3 == 0; };
    for (int i = 0; i < 50; ++i) {
        Route r;
        r.destination = IpPrefix{IpAddress::v4(0xac100000u + (static_cast<std::uint32_t>(i) << 8)), 24};
        r.table = 254;
        r.type = 1;
        r.nexthops = {{ip("10.100.0.2"), 3}};
        w.route(e, now, r, false);
    }
    settle(e, now);
    w.tc.lose = nullptr;
    settle(e, now);
    CHECK(diff(e.desired(), installed(w)) == "");

    // Notifications lost: an audit; the kernel and the installed set agree, so it
    // finds no drift and sends nothing.
    w.tc.overrun = true;
    e.tc_events(w.tc.poll_events(), now);
    const auto changes = w.tc.changes;
    std::vector<engine::Pass> passes;
    settle(e, now, &passes);
    REQUIRE(!passes.empty());
    CHECK(passes.front().audit);
    CHECK(passes.front().drift == 0);
    CHECK(w.tc.changes == changes);
}

TEST_CASE("engine: a permanent refusal is reported once and parked until the rule changes; a busy kernel is retried") {
    World w;
    const Mapping m = parse(kVlan);
    Time now{};
    engine::Engine e(m, w.tc);
    w.tc.refuse = [](const program::Change& c) {
        return c.rule.match.dst_ip && c.rule.match.dst_ip->str() == "10.100.0.2/32" ? EOPNOTSUPP : 0;
    };
    e.start(w.k, now);
    std::vector<engine::Pass> passes;
    settle(e, now, &passes);
    std::size_t reported = 0;
    for (const auto& p : passes) reported += p.refused.size();
    CHECK(reported == 2);  // the host rule, in the inner and the outer chain
    CHECK(e.counts().refused == 2);
    // Other events do not send it again.
    const auto changes = w.tc.changes;
    e.request_audit("test");
    passes.clear();
    settle(e, now, &passes);
    CHECK(w.tc.changes == changes);
    // Its neighbour's new MAC changes it: tried again (and now taken).
    w.tc.refuse = nullptr;
    Neighbour n;
    n.ifindex = 3;
    n.address = ip("10.100.0.2");
    n.mac = mac(9, 9);
    n.state = NeighbourState::Resolved;
    w.neigh(e, now, n, false);
    settle(e, now);
    CHECK(e.counts().refused == 0);
    CHECK(diff(e.desired(), installed(w)) == "");

    // Busy: tried again after a while, without anything else happening.
    int busy = 3;
    w.tc.refuse = [&](const program::Change& c) { return c.kind == program::Change::Kind::Add && busy-- > 0 ? EBUSY : 0; };
    Route r;
    r.destination = pfx("172.16.9.0/24");
    r.table = 254;
    r.type = 1;
    r.nexthops = {{ip("10.100.0.2"), 3}};
    w.route(e, now, r, false);
    settle(e, now);
    CHECK(diff(e.desired(), installed(w)) == "");
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
}

TEST_CASE("engine: random event sequences always end where the full compile says, in the engine and in the kernel") {
    const std::vector<std::string> mappings = {kVlan, kVlanNat, kVxlanNat};
    const std::vector<IpPrefix> prefixes = {
        pfx("10.50.0.0/16"),  pfx("10.50.1.0/24"),   pfx("10.50.1.128/25"), pfx("10.50.1.130/32"), pfx("0.0.0.0/0"),
        pfx("10.100.0.0/24"), pfx("10.100.0.64/26"), pfx("10.100.0.2/32"),  pfx("172.16.0.0/12"),  pfx("172.16.3.0/24"),
        pfx("10.200.0.0/24"), pfx("10.0.1.0/24"),    pfx("10.0.2.10/32"),   pfx("10.1.0.0/24"),    pfx("10.2.0.0/24"),
        pfx("224.0.0.0/4"),   pfx("fd00:50::/48"),   pfx("::/0"),           pfx("fd00:100::/64"),  pfx("fd00:100::2/128")};
    struct Hop {
        std::optional<IpAddress> gw;
        int ifindex;
    };
    const std::vector<Hop> hops = {{ip("10.100.0.2"), 3},   {ip("10.101.0.2"), 4},  {ip("10.200.0.254"), 5},
                                   {ip("10.200.0.253"), 5}, {ip("192.0.2.1"), 6},   {ip("10.100.0.99"), 3},
                                   {std::nullopt, 3},       {std::nullopt, 5},      {ip("10.0.1.2"), 2},
                                   {ip("10.0.2.10"), 7},    {ip("10.1.0.2"), 10},   {ip("fd00:200::fe"), 5},
                                   {ip("fd00:100::2"), 3},  {std::nullopt, 10},     {ip("10.2.0.2"), 11}};
    const std::vector<std::pair<int, IpAddress>> hosts = {
        {3, ip("10.100.0.2")},  {3, ip("10.100.0.5")},   {3, ip("10.100.0.65")}, {4, ip("10.101.0.2")},
        {5, ip("10.200.0.254")}, {5, ip("10.200.0.253")}, {5, ip("10.200.0.7")},  {3, ip("fd00:100::2")},
        {5, ip("fd00:200::fe")}, {2, ip("10.0.1.2")},     {7, ip("10.0.2.10")},   {10, ip("10.1.0.2")},
        {11, ip("10.2.0.2")},    {3, ip("10.50.1.130")}};
    const std::vector<IpAddress> subscribers = {ip("10.100.0.2"), ip("10.100.0.5"), ip("10.1.0.2"), ip("10.101.0.9")};

    // DPO_ENGINE_SEQUENCES=N for a longer run (scripts/engine-soak.sh-style); 300 in CI.
    const int sequences = std::getenv("DPO_ENGINE_SEQUENCES") ? std::atoi(std::getenv("DPO_ENGINE_SEQUENCES")) : 300;
    const char* only = std::getenv("DPO_ENGINE_SEED");  // one sequence, with a trace of every step
    for (int seq = 0; seq < (only ? 1 : sequences); ++seq) {
        const std::uint64_t seed = only ? std::stoull(only) : 0x5eed0000u + static_cast<std::uint64_t>(seq);
        std::mt19937_64 rng(seed);
        auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
        World w;
        std::size_t mi = pick(mappings.size());
        Mapping m = parse(mappings[mi]);
        Time now{};
        engine::Options o;
        o.slice_keys = 1 + pick(8);  // small slices: keys of one change land in different passes
        // A first start in small slices, each sent while the next is compiled (the fake
        // kernel applies a batch only when its answers are collected).
        o.start_slice_changes = 1 + pick(16);
        o.audit_every = std::chrono::seconds(0);
        engine::Engine e(m, w.tc, o);
        if (m.nat && pick(2)) {
            w.nat_on = true;
            e.nat_stage(&w.nat, now);
        }
        e.start(w.k, now);
        settle(e, now);
        std::string trace, history;
        for (int step = 0; step < 40; ++step) {
            history += trace.empty() ? "" : " |" + trace;
            trace.clear();
            const int batch = 1 + static_cast<int>(pick(4));
            for (int b = 0; b < batch; ++b) {
                const auto what = pick(20);
                now += milliseconds(pick(3));
                if (what < 5) {  // a route, added or changed
                    Route r;
                    r.destination = prefixes[pick(prefixes.size())];
                    r.table = pick(10) ? 254 : 100;
                    r.priority = pick(3) ? 0 : 100;
                    r.type = pick(12) ? 1 : 6;
                    const Hop& h = hops[pick(hops.size())];
                    r.nexthops = {{h.gw, h.ifindex}};
                    if (!pick(10)) r.nexthops.push_back({ip("10.101.0.2"), 4});
                    if (h.gw && h.gw->family != r.destination.address.family) r.nexthops = {{std::nullopt, h.ifindex}};
                    trace += " route+" + r.destination.str();
                    w.route(e, now, r, false);
                } else if (what < 7 && !w.k.routes.empty()) {
                    const Route r = w.k.routes[pick(w.k.routes.size())];
                    trace += " route-" + r.destination.str();
                    w.route(e, now, r, true);
                } else if (what < 11) {  // a neighbour
                    const auto& [ifindex, a] = hosts[pick(hosts.size())];
                    Neighbour n;
                    n.ifindex = ifindex;
                    n.address = a;
                    const int state = static_cast<int>(pick(4));
                    if (state > 0) n.mac = mac(0x40, static_cast<std::uint8_t>(pick(3)));
                    n.state = state > 0 ? NeighbourState::Resolved : NeighbourState::Unresolved;
                    n.nud = static_cast<std::uint16_t>(pick(4));
                    const bool removed = !pick(5);
                    trace += std::string(removed ? " neigh-" : " neigh+") + a.str();
                    w.neigh(e, now, n, removed);
                } else if (what < 12) {  // a mapped netdev or the VXLAN device up or down
                    const int ifindex = std::vector<int>{3, 4, 5, 8, 10, 11}[pick(6)];
                    if (w.k.links.count(ifindex)) {
                        Link l = w.k.links[ifindex];
                        l.up = !l.up;
                        trace += " link" + std::to_string(ifindex) + (l.up ? "up" : "down");
                        w.set_link(e, now, ifindex, l);
                    }
                } else if (what < 13) {  // the VXLAN device made again, with a new ifindex
                    const auto it = w.k.links.find(8) != w.k.links.end() ? w.k.links.find(8) : w.k.links.find(80);
                    if (it != w.k.links.end()) {
                        Link l = it->second;
                        const int old = it->first;
                        l.ifindex = old == 8 ? 80 : 8;
                        trace += " vxlan-remade";
                        w.set_link(e, now, old, std::nullopt);
                        w.set_link(e, now, l.ifindex, l);
                    }
                } else if (what < 14) {  // an address (a VTEP among them)
                    const std::vector<Address> as = {{2, pfx("10.0.1.1/24")}, {3, pfx("10.100.0.9/24")},
                                                     {5, pfx("fd00:200::9/64")}, {7, pfx("10.0.2.1/24")}};
                    const Address& a = as[pick(as.size())];
                    const bool has = std::any_of(w.k.addresses.begin(), w.k.addresses.end(), [&](const Address& x) {
                        return x.ifindex == a.ifindex && x.prefix == a.prefix;
                    });
                    trace += std::string(has ? " addr-" : " addr+") + a.prefix.str();
                    w.address(e, now, a, has);
                } else if (what < 16 && w.nat_on) {  // a subscriber's chunk comes, moves, fills or goes
                    const IpAddress& s = subscribers[pick(subscribers.size())];
                    const int how = static_cast<int>(pick(4));
                    if (how == 0) w.nat.subs.erase(s);
                    else if (how == 1) w.nat.subs[s] = {s, nat::ChunkPorts{ip("198.51.100.3"), 1024, 1535}};
                    else if (how == 2) w.nat.subs[s] = {s, nat::ChunkPorts{ip("198.51.100.4"), 2048, 2559}};
                    else w.nat.subs[s] = {s, std::nullopt, pick(2) ? nat::Refusal::ChunkLimit : nat::Refusal::PoolEmpty};
                    trace += " sub" + std::to_string(how) + s.str();
                    e.subscribers({s}, pick(2) == 0, now);
                } else if (what < 17 && m.nat) {  // the NAT stage starts or stops
                    w.nat_on = !w.nat_on;
                    trace += w.nat_on ? " nat-on" : " nat-off";
                    e.nat_stage(w.nat_on ? &w.nat : nullptr, now);
                } else if (what < 18) {  // someone deletes or changes our rules
                    std::vector<std::pair<int, std::uint32_t>> ours;
                    for (const auto& [key, f] : w.tc.filters)
                        if (f.owned) ours.push_back(key);
                    if (!ours.empty()) {
                        const auto key = ours[pick(ours.size())];
                        if (pick(2)) {
                            trace += " foreign-del";
                            w.tc.foreign_delete(key.first, key.second);
                        } else {
                            trace += " foreign-qdisc-del";
                            w.tc.foreign_qdisc_delete(key.first);
                        }
                        e.tc_events(w.tc.poll_events(), now);
                    }
                } else if (what < 19) {  // a reload, maybe to another mapping
                    mi = pick(mappings.size());
                    m = parse(mappings[mi]);
                    if (!m.nat && w.nat_on) {
                        w.nat_on = false;
                        e.nat_stage(nullptr, now);
                    }
                    trace += " reload" + std::to_string(mi);
                    e.reload(m, now);
                } else {  // answers lost now and then: an audit follows
                    w.tc.lose = [&rng](const program::Change&) { return rng() % 4 == 0; };
                    trace += " lossy";
                }
            }
            settle(e, now);
            w.tc.lose = nullptr;
            settle(e, now);
            if (only) {
                std::map<int, int> per_dev;
                for (const auto& [key, f] : w.tc.filters) per_dev[key.first] += f.owned;
                std::printf("step %d:%s\n  engine rules %zu installed %zu; kernel", step, trace.c_str(), e.counts().rules,
                            e.counts().installed);
                for (const auto& [dev, n] : per_dev) std::printf(" #%d:%d", dev, n);
                std::printf(" vxlan0=#%d\n", w.tc.dev("vxlan0"));
            }
            const auto want = oracle(m, w, e);
            const auto got = e.desired();
            INFO("seed " << seed << " step " << step << " mapping " << mi << ": this step:" << trace
                          << "\n  before it:" << history);
            INFO("engine vs full compile:\n" << diff(want, got));
            REQUIRE(got == want);
            {
                compile::Adjacencies ids = e.adjacencies();
                const nat::NatState ns = w.nat.state();
                const auto notes = compile::compile(m, w.k, w.nat_on ? &ns : nullptr, &ids).notes;
                REQUIRE(e.notes() == notes);  // what is left to the kernel, and why, as well
            }
            const auto kernel = installed(w);
            INFO("kernel vs engine:\n" << diff(got, kernel));
            INFO("engine: rules " << e.counts().rules << " installed " << e.counts().installed << " refused "
                                  << e.counts().refused << " queued " << e.counts().queued);
            REQUIRE(kernel == got);
            // The per-device view adds up to the totals the engine keeps as it goes.
            engine::DeviceCounts sum;
            std::size_t on_kernel = 0;
            for (const auto& [dev, d] : e.device_counts()) {
                sum.desired += d.desired, sum.installed += d.installed, sum.in_hw += d.in_hw;
                sum.not_in_hw += d.not_in_hw, sum.refused += d.refused;
                for (const auto& [id, _] : kernel) on_kernel += id.dev == dev;
                REQUIRE(on_kernel == sum.installed);
            }
            const auto c = e.counts();
            REQUIRE(sum == engine::DeviceCounts{c.rules, c.installed, c.in_hw, c.not_in_hw, c.refused});
        }
    }
}

TEST_CASE("engine: foreign rules stay, on our devices and in our chains") {
    World w;
    const Mapping m = parse(kVlan);
    tc::Rule theirs;
    theirs.dev = "p0";
    theirs.chain = compile::kChainInner;
    theirs.prio = 116;
    theirs.protocol = tc::kEth8021Q;
    theirs.match.vlan_ethtype = tc::kEthIpv4;
    theirs.match.dst_ip = pfx("10.50.0.0/16");
    theirs.actions = {tc::Drop{}};
    w.tc.clsact.insert(2);
    w.tc.filters[{2, 1}] = test::FakeKernel::Filter{theirs, false};
    Time now{};
    engine::Engine e(m, w.tc);
    e.start(w.k, now);
    settle(e, now);
    e.request_audit("test");
    settle(e, now);
    REQUIRE(w.tc.filters.count({2, 1}));
    CHECK_FALSE(w.tc.filters.at({2, 1}).owned);
    CHECK(diff(e.desired(), installed(w)) == "");
}

TEST_CASE("engine: a shared redirect toward a re-made device is pointed at the new one before its holders change") {
    World w;
    const Mapping m = parse(kVxlanNat);
    Time now{};
    engine::Engine e(m, w.tc);
    e.start(w.k, now);
    settle(e, now);
    const std::uint32_t evpn_counter = compile::kEgressCounterVxlanBase + 5001;
    REQUIRE(w.tc.shared.at(evpn_counter).ifindex == 8);
    // vxlan0 deleted and made again: the uplink's rules toward EVPN hold the counter.
    Link vx = w.k.links.at(8);
    w.set_link(e, now, 8, std::nullopt);
    vx.ifindex = 80;
    w.set_link(e, now, 80, vx);
    std::vector<engine::Pass> passes;
    settle(e, now, &passes);
    std::size_t repointed = 0;
    for (const auto& p : passes) repointed += p.repointed;
    CHECK(repointed >= 1);
    CHECK(w.tc.shared.at(evpn_counter).ifindex == 80);
    CHECK(diff(e.desired(), installed(w)) == "");
    CHECK(diff(oracle(m, w, e), e.desired()) == "");
}

TEST_CASE("engine: rules for a device that is not there wait for it, then go in") {
    World w;
    const Mapping m = parse(kVlanNat);
    // The punt pair is not known yet (its link events come later).
    w.k.links.erase(43);
    w.tc.ifindex.erase("dpo-punt");
    Time now{};
    engine::Engine e(m, w.tc);
    w.nat_on = true;
    e.nat_stage(&w.nat, now);
    e.start(w.k, now);
    settle(e, now);
    CHECK(e.counts().installed + 1 == e.counts().rules);  // the punt sink rule waits
    Link punt;
    punt.ifindex = 43;
    punt.name = "dpo-punt";
    punt.kind = "veth";
    punt.up = true;
    w.set_link(e, now, 43, punt);
    settle(e, now);
    CHECK(diff(e.desired(), installed(w)) == "");
    CHECK(e.counts().installed == e.counts().rules);
}

TEST_CASE("engine: a device that cannot be dumped is reported; the rest goes on") {
    World w;
    const Mapping m = parse(kVxlanNat);
    w.tc.ifindex.erase("vxlan0");  // the fake cannot dump it (nor add to it)
    Time now{};
    engine::Engine e(m, w.tc);
    e.start(w.k, now);
    // Not settle(): the rules for vxlan0 are retried, backing off, for as long as it fails.
    const auto first = e.flush(now);
    CHECK(!first.problems.empty());
    for (int i = 0; i < 20; ++i) {
        now = std::max(now, e.next_due(now).value_or(now));
        e.flush(now);
    }
    std::size_t on_uplink = 0;
    for (const auto& [id, _] : e.desired()) on_uplink += id.dev == "p0";
    CHECK(w.tc.rules_on(2).size() == on_uplink);
}

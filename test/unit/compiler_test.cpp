// SPDX-License-Identifier: GPL-2.0-or-later
// Golden tests of the compiler, group by group of the flow chart. The kernel state
// is a hypervisor with an uplink p0 and VLAN interfaces blue (100), red (101) and
// transit (200, outer).
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "core/compile/compiler.hpp"
#include "core/compile/counter_names.hpp"
#include "core/compile/pipeline.hpp"
#include "core/mapping_loader.hpp"

using dpo::IpAddress;
using dpo::IpPrefix;

namespace {

const char* const kVlanMapping = R"({"uplink": "p0", "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})";

dpo::Mapping mapping(const std::string& extra_nat = "") {
    std::string text = kVlanMapping;
    if (!extra_nat.empty()) text = text.substr(0, text.size() - 1) + ", " + extra_nat + "}";
    auto r = dpo::parse_mapping(text, "m.json");
    REQUIRE(r.ok());
    return *r;
}

dpo::Mac mac(std::uint8_t a, std::uint8_t b) { return {2, 0, 0, 0, a, b}; }

struct Hypervisor {
    dpo::KernelState k;

    Hypervisor() {
        link(2, "p0", "", 0, 0, mac(0, 1));
        link(3, "p0.100", "vlan", 2, 100, mac(0x10, 0));
        link(4, "p0.101", "vlan", 2, 101, mac(0x10, 1));
        link(5, "p0.200", "vlan", 2, 200, mac(0x20, 0));
        link(6, "eth0", "", 0, 0, mac(0xee, 0));
        address(3, "10.100.0.1/24");
        address(4, "10.101.0.1/24");
        address(5, "10.200.0.1/24");
        address(6, "192.0.2.10/24");
        address(3, "fd00:100::1/64");
        address(5, "fd00:200::1/64");
        address(3, "fe80::10:0/64");
        connected("10.100.0.0/24", 3);
        connected("10.101.0.0/24", 4);
        connected("10.200.0.0/24", 5);
        connected("192.0.2.0/24", 6);
        connected("fd00:100::/64", 3);
        connected("fd00:200::/64", 5);
        connected("fe80::/64", 3);
        via("0.0.0.0/0", "10.200.0.254", 5);
        via("10.50.0.0/16", "10.100.0.2", 3);
        via("::/0", "fd00:200::fe", 5);
        neighbour(3, "10.100.0.2", mac(1, 2));
        neighbour(4, "10.101.0.2", mac(1, 3));
        neighbour(5, "10.200.0.254", mac(2, 0xfe));
        neighbour(3, "fd00:100::2", mac(1, 2));
        neighbour(5, "fd00:200::fe", mac(2, 0xfe));
    }

    void link(int ifindex, const char* name, const char* kind, int parent, std::uint16_t vid, dpo::Mac m) {
        dpo::Link& l = k.links[ifindex];
        l.ifindex = ifindex;
        l.name = name;
        l.kind = kind;
        l.parent_ifindex = parent;
        if (vid) l.vlan_id = vid;
        l.mac = m;
        l.up = true;
    }
    void address(int ifindex, const char* p) { k.addresses.push_back({ifindex, *IpPrefix::parse(p)}); }
    dpo::Route& add_route(const char* dst) {
        dpo::Route r;
        r.destination = *IpPrefix::parse(dst);
        r.table = 254;
        r.type = 1;
        k.routes.push_back(r);
        return k.routes.back();
    }
    void connected(const char* dst, int ifindex) { add_route(dst).nexthops = {{std::nullopt, ifindex}}; }
    dpo::Route& via(const char* dst, const char* gw, int ifindex) {
        dpo::Route& r = add_route(dst);
        r.nexthops = {{*IpAddress::parse(gw), ifindex}};
        return r;
    }
    void neighbour(int ifindex, const char* ip, std::optional<dpo::Mac> m) {
        dpo::Neighbour n;
        n.ifindex = ifindex;
        n.address = *IpAddress::parse(ip);
        n.mac = m;
        n.state = m ? dpo::NeighbourState::Resolved : dpo::NeighbourState::Unresolved;
        k.neighbours.push_back(n);
    }
};

std::vector<std::string> commands(const dpo::compile::Program& p, std::uint32_t chain) {
    std::vector<std::string> out;
    for (const auto& r : p.rules)
        if (r.chain == chain) out.push_back(dpo::tc::to_tc_command(r));
    return out;
}

// The one rule of `chain` whose command contains `words`, or "" if not exactly one.
std::string the_rule(const dpo::compile::Program& p, std::uint32_t chain, const std::string& words) {
    std::string found;
    int n = 0;
    for (const auto& c : commands(p, chain))
        if (c.find(words) != std::string::npos) {
            found = c;
            ++n;
        }
    return n == 1 ? found : "";
}

bool has_rule(const dpo::compile::Program& p, std::uint32_t chain, const std::string& words) {
    return !the_rule(p, chain, words).empty();
}

constexpr std::uint32_t kInner = dpo::compile::kChainInner;
constexpr std::uint32_t kOuter = dpo::compile::kChainOuter;
constexpr std::uint32_t kNextHop = dpo::compile::kChainAdjacencyBase;     // + id
constexpr std::uint32_t kNatNextHop = dpo::compile::kChainNatAdjacencyBase;  // + id

// Where a forwarding rule sends its packets: its own tail, or, when it jumps to a next
// hop's chain, the tail there (the one rule of that chain for the rule's family).
std::string forwarding(const dpo::compile::Program& p, const std::string& dev, std::uint32_t chain,
                       const std::string& words) {
    const dpo::tc::Rule* found = nullptr;
    int n = 0;
    for (const auto& r : p.rules)
        if (r.dev == dev && r.chain == chain && dpo::tc::to_tc_command(r).find(words) != std::string::npos) {
            found = &r;
            ++n;
        }
    if (n != 1) return "";
    const auto* g = found->actions.empty() ? nullptr : std::get_if<dpo::tc::Goto>(&found->actions.back());
    const std::uint32_t base = dev == "p0" ? 0 : dpo::compile::kChainVxlanBase;
    if (!g || g->chain < base + kNextHop || g->chain >= base + kNextHop + dpo::compile::kMaxAdjacencies)
        return dpo::tc::to_tc_command(*found);
    std::string tail;
    for (const auto& r : p.rules)
        if (r.dev == dev && r.chain == g->chain && r.protocol == found->protocol &&
            r.match.vlan_ethtype == found->match.vlan_ethtype) {
            if (!tail.empty()) return "two rules in next-hop chain " + std::to_string(g->chain);
            tail = dpo::tc::to_tc_command(r);
        }
    return tail;
}
std::string forwarding(const dpo::compile::Program& p, std::uint32_t chain, const std::string& words) {
    return forwarding(p, "p0", chain, words);
}
bool forwards(const dpo::compile::Program& p, std::uint32_t chain, const std::string& words, const std::string& tail) {
    return forwarding(p, chain, words).find(tail) != std::string::npos;
}

}  // namespace

TEST_CASE("group 1, shared ingress: chain 0 sends tagged traffic to classification") {
    auto p = dpo::compile::compile(mapping(), Hypervisor().k);
    CHECK(commands(p, 0) ==
          std::vector<std::string>{"tc filter add dev p0 ingress chain 0 prio 2 protocol 802.1Q flower "
                                   "action gact goto chain 1"});
}

TEST_CASE("group 2, lookup interface id: iface = f(vlan) for frames to the router's MAC, tag still on") {
    auto p = dpo::compile::compile(mapping(), Hypervisor().k);
    CHECK(commands(p, 1) == std::vector<std::string>{
                                "tc filter add dev p0 ingress chain 1 prio 1 protocol 802.1Q flower dst_mac "
                                "02:00:00:00:10:00 vlan_id 100 action gact goto chain 256",
                                "tc filter add dev p0 ingress chain 1 prio 1 protocol 802.1Q flower dst_mac "
                                "02:00:00:00:10:01 vlan_id 101 action gact goto chain 256",
                                "tc filter add dev p0 ingress chain 1 prio 1 protocol 802.1Q flower dst_mac "
                                "02:00:00:00:20:00 vlan_id 200 action gact goto chain 512",
                            });
}

TEST_CASE("group 3, routing: a route via a resolved gateway jumps to its next hop's chain, which rewrites, re-tags, egresses") {
    auto p = dpo::compile::compile(mapping(), Hypervisor().k);
    // inner -> inner: 10.50.0.0/16 via 10.100.0.2 on blue. Next hops are numbered in
    // the order first used (prefixes in order: 0.0.0.0/0 took 0, 10.50.0.0/16 1, ::/0 2).
    CHECK(the_rule(p, kInner, "dst_ip 10.50.0.0/16") ==
          "tc filter add dev p0 ingress chain 256 prio 116 protocol 802.1Q flower vlan_ethtype ip "
          "dst_ip 10.50.0.0/16 action gact goto chain 36865");
    CHECK(commands(p, kNextHop + 1) ==
          std::vector<std::string>{
              "tc filter add dev p0 ingress chain 36865 prio 1 protocol 802.1Q flower vlan_ethtype ip "
              "action pedit ex munge eth dst set 02:00:00:00:01:02 munge eth src set 02:00:00:00:10:00 munge ip ttl "
              "add 255 pipe action csum iph pipe action vlan pop pipe action vlan push id 100 pipe action mirred "
              "egress redirect dev p0 index 3640655972"});
    // inner -> outer without nat: the default route via transit, zero-length prefix left unmatched
    CHECK(the_rule(p, kInner, "prio 132 ") ==
          "tc filter add dev p0 ingress chain 256 prio 132 protocol 802.1Q flower vlan_ethtype ip "
          "action gact goto chain 36864");
    CHECK(commands(p, kNextHop) ==
          std::vector<std::string>{
              "tc filter add dev p0 ingress chain 36864 prio 1 protocol 802.1Q flower vlan_ethtype ip "
              "action pedit ex munge eth dst set 02:00:00:00:02:fe munge eth src set 02:00:00:00:20:00 munge ip ttl "
              "add 255 pipe action csum iph pipe action vlan pop pipe action vlan push id 200 pipe action mirred "
              "egress redirect dev p0 index 3640656072"});
    // The outer chain's default route shares the next hop: one chain per next hop.
    CHECK(the_rule(p, kOuter, "prio 132 ").find("action gact goto chain 36864") != std::string::npos);
    // IPv6: hop limit, no header checksum
    CHECK(the_rule(p, kInner, "prio 328 ") ==
          "tc filter add dev p0 ingress chain 256 prio 328 protocol 802.1Q flower vlan_ethtype ipv6 "
          "action gact goto chain 36866");
    CHECK(commands(p, kNextHop + 2) ==
          std::vector<std::string>{
              "tc filter add dev p0 ingress chain 36866 prio 1 protocol 802.1Q flower vlan_ethtype ipv6 "
              "action pedit ex munge eth dst set 02:00:00:00:02:fe munge eth src set 02:00:00:00:20:00 munge ip6 "
              "hoplimit add 255 pipe action vlan pop pipe action vlan push id 200 pipe action mirred egress redirect "
              "dev p0 index 3640656072"});
}

TEST_CASE("next-hop ids are kept: a given table decides them, a new next hop takes the lowest free one") {
    dpo::compile::Adjacencies ids(dpo::compile::kMaxAdjacencies);
    Hypervisor h;
    auto before = dpo::compile::compile(mapping(), h.k, nullptr, &ids);
    REQUIRE(ids.size() == 3);
    // A new next hop, first in every order: the others keep their chains and rules.
    h.via("1.0.0.0/8", "10.101.0.2", 4);
    auto after = dpo::compile::compile(mapping(), h.k, nullptr, &ids);
    CHECK(the_rule(after, kInner, "dst_ip 1.0.0.0/8").find("goto chain 36867") != std::string::npos);
    for (const auto& r : before.rules)
        CHECK(std::find(after.rules.begin(), after.rules.end(), r) != after.rules.end());
    // A next hop found installed (a previous run's chain) is taken back by its signature.
    dpo::compile::Adjacencies fresh(dpo::compile::kMaxAdjacencies);
    dpo::compile::reserve_adjacencies(fresh, after.rules);
    auto again = dpo::compile::compile(mapping(), h.k, nullptr, &fresh);
    CHECK(again.rules == after.rules);
}

TEST_CASE("group 3, routing: connected destinations go by their resolved neighbour, one rule each") {
    auto p = dpo::compile::compile(mapping(), Hypervisor().k);
    CHECK(has_rule(p, kOuter, "dst_ip 10.100.0.2/32 action pedit ex munge eth dst set 02:00:00:00:01:02 munge eth "
                              "src set 02:00:00:00:10:00"));
    CHECK(has_rule(p, kOuter, "dst_ip 10.101.0.2/32 action pedit ex munge eth dst set 02:00:00:00:01:03"));
    CHECK(has_rule(p, kOuter, "dst_ip fd00:100::2/128 action pedit"));
    // The rest of a connected prefix is the kernel's: it resolves, then the watcher tells us.
    CHECK(the_rule(p, kOuter, "dst_ip 10.100.0.0/24") ==
          "tc filter add dev p0 ingress chain 512 prio 108 protocol 802.1Q flower vlan_ethtype ip "
          "dst_ip 10.100.0.0/24 action gact ok");
}

TEST_CASE("the fast path leaves to the kernel what it cannot carry") {
    Hypervisor h;
    h.neighbour(5, "10.200.0.7", std::nullopt);  // unresolved
    h.via("10.60.0.0/16", "10.100.0.99", 3);    // gateway without a neighbour
    h.via("10.70.0.0/16", "192.0.2.1", 6);      // egress not a mapped interface
    auto& mp = h.add_route("10.80.0.0/16");     // multipath
    mp.nexthops = {{*IpAddress::parse("10.100.0.2"), 3}, {*IpAddress::parse("10.101.0.2"), 4}};
    h.add_route("10.90.0.0/16").type = 6;       // blackhole
    auto p = dpo::compile::compile(mapping(), h.k);

    // TTL <= 1: the kernel answers time exceeded.
    CHECK(the_rule(p, kInner, "prio 1 ") ==
          "tc filter add dev p0 ingress chain 256 prio 1 protocol 802.1Q flower vlan_ethtype ip "
          "ip_ttl 0x00/0xfe action gact ok");
    CHECK(the_rule(p, kInner, "prio 2 ") ==
          "tc filter add dev p0 ingress chain 256 prio 2 protocol 802.1Q flower vlan_ethtype ipv6 "
          "ip_ttl 0x00/0xfe action gact ok");
    // To the host, on any of its devices; multicast, broadcast and link-local.
    for (const char* local : {"10.100.0.1/32", "10.200.0.1/32", "192.0.2.10/32", "fd00:100::1/128",
                              "224.0.0.0/4", "255.255.255.255/32", "ff00::/8", "fe80::/10"})
        CHECK(the_rule(p, kInner, std::string("dst_ip ") + local + " action gact ok") != "");
    CHECK_FALSE(has_rule(p, kInner, "fe80::10:0/128"));  // covered by fe80::/10
    // Special destinations and martian sources: the kernel decides, as a router would.
    for (const char* d : {"127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128"})
        CHECK(the_rule(p, kInner, std::string("dst_ip ") + d + " action gact ok") != "");
    for (const char* src : {"127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32", "fe80::/10", "ff00::/8",
                            "::1/128", "::/128"})
        CHECK(the_rule(p, kOuter, std::string("src_ip ") + src + " action gact ok") != "");
    CHECK(has_rule(p, kInner, "prio 5 protocol 802.1Q flower vlan_ethtype ip src_ip 127.0.0.0/8 action gact ok"));
    CHECK(has_rule(p, kInner, "prio 6 protocol 802.1Q flower vlan_ethtype ipv6 src_ip fe80::/10 action gact ok"));

    CHECK_FALSE(has_rule(p, kInner, "dst_ip 10.200.0.7/32"));
    for (const char* prefix : {"10.60.0.0/16", "10.70.0.0/16", "10.80.0.0/16", "10.90.0.0/16"})
        CHECK(has_rule(p, kInner, std::string("dst_ip ") + prefix + " action gact ok"));
    const auto& notes = p.notes;
    auto noted = [&](const std::string& w) {
        return std::any_of(notes.begin(), notes.end(), [&](const std::string& n) { return n.find(w) != std::string::npos; });
    };
    CHECK(noted("route 10.60.0.0/16: gateway 10.100.0.99 unresolved: left to the kernel"));
    CHECK(noted("route 10.70.0.0/16: egress eth0 is not a mapped interface that is up: left to the kernel"));
    CHECK(noted("route 10.80.0.0/16: multipath"));
    CHECK(noted("route 10.90.0.0/16: not a unicast route"));
}

TEST_CASE("longest prefix match: a longer prefix always has a lower prio, and hides neighbours under it") {
    Hypervisor h;
    h.via("10.200.0.128/25", "10.100.0.2", 3);
    h.neighbour(5, "10.200.0.130", mac(2, 0x82));  // under the /25 via blue, not the connected /24
    h.neighbour(5, "10.200.0.20", mac(2, 0x14));
    auto p = dpo::compile::compile(mapping(), h.k);
    CHECK(has_rule(p, kInner, "prio 107 protocol 802.1Q flower vlan_ethtype ip dst_ip 10.200.0.128/25"));
    CHECK_FALSE(has_rule(p, kInner, "10.200.0.130/32"));
    CHECK(has_rule(p, kInner, "prio 100 protocol 802.1Q flower vlan_ethtype ip dst_ip 10.200.0.20/32"));

    // Among routes to one prefix the lowest metric wins, as in the kernel.
    Hypervisor g;
    g.via("10.40.0.0/16", "10.100.0.2", 3).priority = 0;
    auto& worse = g.add_route("10.40.0.0/16");
    worse.priority = 100;
    worse.nexthops = {{*IpAddress::parse("10.200.0.254"), 5}};
    auto q = dpo::compile::compile(mapping(), g.k);
    CHECK(forwards(q, kInner, "dst_ip 10.40.0.0/16", "action pedit ex munge eth dst set 02:00:00:00:01:02"));
}

TEST_CASE("with nat configured, inner -> outer IPv4 waits for the NAT stage; IPv6 is routed") {
    auto p = dpo::compile::compile(mapping(R"("nat": {"zone": 1, "pool": ["198.51.100.0/28"]})"), Hypervisor().k);
    CHECK(the_rule(p, kInner, "prio 132 ") ==
          "tc filter add dev p0 ingress chain 256 prio 132 protocol 802.1Q flower vlan_ethtype ip action gact ok");
    CHECK(forwards(p, kInner, "prio 328 protocol 802.1Q flower vlan_ethtype ipv6", "action pedit"));
    CHECK(forwards(p, kInner, "dst_ip 10.50.0.0/16", "action pedit"));  // inner -> inner
    CHECK(forwards(p, kOuter, "prio 132 protocol 802.1Q flower vlan_ethtype ip", "action pedit"));  // outer -> outer
}

TEST_CASE("only routes of the mapping's table count") {
    Hypervisor h;
    h.via("10.30.0.0/16", "10.100.0.2", 3).table = 100;
    auto p = dpo::compile::compile(mapping(), h.k);
    CHECK_FALSE(has_rule(p, kInner, "10.30.0.0/16"));
}

TEST_CASE("the program is a function of the state, not of the order it was learnt in") {
    Hypervisor h;
    auto a = dpo::compile::compile(mapping(), h.k);
    std::reverse(h.k.routes.begin(), h.k.routes.end());
    std::reverse(h.k.neighbours.begin(), h.k.neighbours.end());
    std::reverse(h.k.addresses.begin(), h.k.addresses.end());
    auto b = dpo::compile::compile(mapping(), h.k);
    CHECK(a.rules == b.rules);
    std::set<std::string> keys;
    for (const auto& r : a.rules) CHECK(keys.insert(r.key()).second);
}

TEST_CASE("no uplink, no rules") {
    Hypervisor h;
    h.k.links.erase(2);
    auto p = dpo::compile::compile(mapping(), h.k);
    CHECK(p.rules.empty());
    REQUIRE(p.notes.size() == 1);
    CHECK(p.notes[0] == "uplink p0 does not exist: no rules");
}

TEST_CASE("an interface whose netdev is down or missing is neither classified nor an egress") {
    Hypervisor h;
    h.k.links[4].up = false;  // p0.101 (red) down
    h.k.links.erase(5);       // p0.200 (transit) gone
    auto p = dpo::compile::compile(mapping(), h.k);
    CHECK(commands(p, 1) == std::vector<std::string>{
                                "tc filter add dev p0 ingress chain 1 prio 1 protocol 802.1Q flower dst_mac "
                                "02:00:00:00:10:00 vlan_id 100 action gact goto chain 256"});
    CHECK_FALSE(has_rule(p, kInner, "dst_ip 10.101.0.2/32"));
    CHECK(std::count(p.notes.begin(), p.notes.end(), "interface red: netdev p0.101 is down: its VLAN is left to the kernel") == 1);
    CHECK(std::count(p.notes.begin(), p.notes.end(),
                     "interface transit: netdev p0.200 does not exist: its VLAN is left to the kernel") == 1);
}

TEST_CASE("nat stage, inner -> outer: the route looks the connection up (ct first) and continues by state in its next hop's NAT chain") {
    const auto m = mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    dpo::compile::NatState nat;
    nat.punt_ifindex = 42;
    nat.punt_dev = "dpo-inject";
    nat.subscribers = {{*IpAddress::parse("10.100.0.2"),
                        dpo::nat::ChunkPorts{*IpAddress::parse("198.51.100.3"), 4608, 5119}},
                       {*IpAddress::parse("10.100.0.3"), std::nullopt}};
    auto p = dpo::compile::compile(m, Hypervisor().k, &nat);
    // The default route toward transit: ct zone 7 nat, then the NAT chain of its next hop (vlan 200, the gateway).
    CHECK(the_rule(p, kInner, "prio 132 ") ==
          "tc filter add dev p0 ingress chain 256 prio 132 protocol 802.1Q flower vlan_ethtype ip "
          "action ct zone 7 nat pipe action gact goto chain 4096");
    // IPv6 toward the outside: tracked, not translated.
    CHECK(the_rule(p, kInner, "prio 328 ") ==
          "tc filter add dev p0 ingress chain 256 prio 328 protocol 802.1Q flower vlan_ethtype ipv6 "
          "action ct zone 7 pipe action gact goto chain 4098");
    // inner -> inner is untouched by NAT.
    CHECK(the_rule(p, kInner, "dst_ip 10.50.0.0/16") ==
          "tc filter add dev p0 ingress chain 256 prio 116 protocol 802.1Q flower vlan_ethtype ip dst_ip 10.50.0.0/16 "
          "action gact goto chain 36865");

    const std::string tail = "action pedit ex munge eth dst set 02:00:00:00:02:fe munge eth src set 02:00:00:00:20:00 "
                             "munge ip ttl add 255 pipe action csum iph pipe action vlan pop pipe action vlan push id "
                             "200 pipe action mirred egress redirect dev p0 index 3640656072";
    // By connection state: established and related take the tail at once (4 tables in
    // all, as without NAT); invalid is dropped; new goes to its subscriber's rule.
    CHECK(commands(p, kNatNextHop) ==
          std::vector<std::string>{
              "tc filter add dev p0 ingress chain 4096 prio 1 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+est " +
                  tail,
              "tc filter add dev p0 ingress chain 4096 prio 2 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+rel " +
                  tail,
              "tc filter add dev p0 ingress chain 4096 prio 3 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+inv "
              "action gact drop index 3643801602",
              "tc filter add dev p0 ingress chain 4096 prio 4 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+new "
              "action gact goto chain 32768"});
    const std::uint32_t snat = dpo::compile::kChainSnat;
    // One rule per subscriber, whatever the next hops: commit into its chunk, then the
    // outer-bound routes again (0x8001) to find the next hop's own chain.
    CHECK(commands(p, snat) ==
          std::vector<std::string>{
              "tc filter add dev p0 ingress chain 32768 prio 1 protocol 802.1Q flower vlan_ethtype ip "
              "src_ip 10.100.0.2/32 ct_state +trk+new action ct commit zone 7 src addr 198.51.100.3-198.51.100.3 "
              "port 4608-5119 pipe action gact goto chain 32769",
              // At its limit: dropped, counted as "chunk limit" (shared).
              "tc filter add dev p0 ingress chain 32768 prio 1 protocol 802.1Q flower vlan_ethtype ip "
              "src_ip 10.100.0.3/32 ct_state +trk+new action gact drop index 3643801603",
              // Without a chunk: to the daemon.
              "tc filter add dev p0 ingress chain 32768 prio 2 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+new "
              "action police pkts_rate 1000 pkts_burst 100 conform-exceed drop/pipe "
              "action mirred egress redirect dev dpo-inject index 3642753024"});
    // (The gateway is a connected host too: its host rule shares its next hop's chains.)
    CHECK(commands(p, dpo::compile::kChainToOutside) ==
          std::vector<std::string>{"tc filter add dev p0 ingress chain 32769 prio 100 protocol 802.1Q flower "
                                   "vlan_ethtype ip dst_ip 10.200.0.254/32 action gact goto chain 36864",
                                   "tc filter add dev p0 ingress chain 32769 prio 132 protocol 802.1Q flower "
                                   "vlan_ethtype ip action gact goto chain 36864"});
    CHECK(commands(p, kNextHop) ==
          std::vector<std::string>{"tc filter add dev p0 ingress chain 36864 prio 1 protocol 802.1Q flower "
                                   "vlan_ethtype ip " + tail});
    // IPv6 new connections are committed untranslated, and take the tail.
    CHECK(the_rule(p, 4098, "prio 4 ").find("ct_state +trk+new action ct commit zone 7 pipe action pedit") !=
          std::string::npos);
}

TEST_CASE("nat stage: rules grow as subscribers + next hops + outer-bound routes, never as a product") {
    const auto m = mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/24"]})");
    auto count = [&](std::size_t subscribers, std::size_t next_hops, std::size_t outer_routes) {
        Hypervisor h;
        for (std::size_t i = 0; i < next_hops; ++i) {
            const auto gw = "10.200.0." + std::to_string(10 + i);
            h.neighbour(5, gw.c_str(), mac(0x30, static_cast<std::uint8_t>(i)));
            for (std::size_t r = 0; r < outer_routes; ++r) {
                const auto dst = "172." + std::to_string(16 + i) + "." + std::to_string(r) + ".0/24";
                h.via(dst.c_str(), gw.c_str(), 5);
            }
        }
        dpo::compile::NatState nat;
        nat.punt_ifindex = 42;
        nat.punt_dev = "dpo-inject";
        for (std::size_t i = 0; i < subscribers; ++i)
            nat.subscribers.push_back({IpAddress::v4(0x0a640000u + static_cast<std::uint32_t>(i) + 10),
                                       dpo::nat::ChunkPorts{*IpAddress::parse("198.51.100.3"), 1024, 1535}});
        return dpo::compile::compile(m, h.k, &nat).rules.size();
    };
    const auto base = count(0, 1, 1);
    // Each subscriber: one rule. Each next hop: its chain (1) and its NAT chain (4), and
    // its host rules in the inner and outer chains and 0x8001. Each outer-bound route:
    // the inner chain, 0x8001 and the outer chain.
    CHECK(count(10, 1, 1) - base == 10);
    CHECK(count(20, 1, 1) - base == 20);
    CHECK(count(0, 1, 11) - base == 30);
    CHECK(count(10, 1, 11) - base == 40);
    const auto per_next_hop = count(0, 2, 1) - base;
    CHECK(count(0, 11, 1) - base == 10 * per_next_hop);
    CHECK(count(10, 11, 1) - base == 10 * per_next_hop + 10);
}

TEST_CASE("nat stage, outer ingress: translate back first, then route what is established; new and invalid drop") {
    const auto m = mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    dpo::compile::NatState nat;
    auto p = dpo::compile::compile(m, Hypervisor().k, &nat);
    CHECK(the_rule(p, kOuter, "prio 50 ") == "tc filter add dev p0 ingress chain 512 prio 50 protocol 802.1Q flower "
                                             "vlan_ethtype ip action ct zone 7 nat pipe action gact goto chain 513");
    CHECK(the_rule(p, kOuter, "prio 51 ") == "tc filter add dev p0 ingress chain 512 prio 51 protocol 802.1Q flower "
                                             "vlan_ethtype ipv6 action ct zone 7 pipe action gact goto chain 513");
    // TTL and to-the-host stay before the lookup.
    CHECK(has_rule(p, kOuter, "prio 1 protocol 802.1Q flower vlan_ethtype ip ip_ttl 0x00/0xfe action gact ok"));
    CHECK(has_rule(p, kOuter, "dst_ip 10.200.0.1/32 action gact ok"));
    const std::uint32_t tracked = dpo::compile::kChainOuterTracked;
    CHECK(the_rule(p, tracked, "prio 7 ") == "tc filter add dev p0 ingress chain 513 prio 7 protocol 802.1Q flower "
                                             "vlan_ethtype ip ct_state +trk+new action gact drop index 3643801601");
    CHECK(the_rule(p, tracked, "prio 10 ") == "tc filter add dev p0 ingress chain 513 prio 10 protocol 802.1Q flower "
                                              "vlan_ethtype ipv6 ct_state +trk+inv action gact drop index 3643801602");
    // Replies routed to the subscriber after translation back.
    CHECK(has_rule(p, tracked, "dst_ip 10.100.0.2/32 action pedit ex munge eth dst set 02:00:00:00:01:02"));
    CHECK_FALSE(has_rule(p, kOuter, "dst_ip 10.100.0.2/32"));
    // No punt device: a subscriber's first packet is dropped rather than leaked untranslated.
    CHECK(the_rule(p, dpo::compile::kChainSnat, "prio 2 ").find("ct_state +trk+new action gact drop index 3643801604") !=
          std::string::npos);
}

TEST_CASE("without the nat stage, nothing is tracked and inner -> outer IPv4 stays with the kernel") {
    const auto m = mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    auto p = dpo::compile::compile(m, Hypervisor().k);
    for (const auto& r : p.rules) {
        CHECK_FALSE(r.match.ct_state.has_value());
        CHECK((r.chain < dpo::compile::kChainOuterTracked || r.chain >= kNextHop));
    }
}

// ---------------------------------------------------------------- VXLAN: EVPN and ACI
//
// The same hypervisor plus the VXLAN side: p0 carries the EVPN underlay
// (10.0.1.1, remote VTEP 10.0.1.2), p0.2 the ACI infra VLAN (10.0.2.1, remote VTEP
// 10.0.2.10), vxlan0 is the metadata-mode VXLAN device, and the SVIs svi-green (EVPN
// VNI 5001) and svi-web (ACI VNI 6001) sit on a bridge.

namespace {

const char* const kVxlanMapping = R"({"uplink": "p0",
    "vxlan": {"device": "vxlan0", "port": 4789},
    "aci": {"vlan": 2, "local_vtep": "10.0.2.1"},
    "evpn": {"local_vtep": "10.0.1.1"},
    "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "green", "netdev": "svi-green", "role": "inner", "evpn": {"vni": 5001, "remote_vtep": "10.0.1.2"}},
    {"name": "web", "netdev": "svi-web", "role": "inner", "aci": {"vni": 6001, "remote_vtep": "10.0.2.10"}},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})";

dpo::Mapping vxlan_mapping(const std::string& extra = "") {
    std::string text = kVxlanMapping;
    if (!extra.empty()) text = text.substr(0, text.size() - 1) + ", " + extra + "}";
    auto r = dpo::parse_mapping(text, "m.json");
    REQUIRE(r.ok());
    return *r;
}

struct VxlanHypervisor : Hypervisor {
    VxlanHypervisor() {
        link(7, "p0.2", "vlan", 2, 2, mac(0x02, 1));
        link(8, "vxlan0", "vxlan", 0, 0, mac(0xaa, 0));
        link(9, "br0", "bridge", 0, 0, mac(0xbb, 0));
        link(10, "svi-green", "vlan", 9, 10, mac(0x50, 1));
        link(11, "svi-web", "vlan", 9, 20, mac(0x60, 1));
        address(2, "10.0.1.1/24");
        address(7, "10.0.2.1/24");
        address(10, "10.1.0.1/24");
        address(10, "fd00:5001::1/64");
        address(11, "10.2.0.1/24");
        connected("10.0.1.0/24", 2);
        connected("10.0.2.0/24", 7);
        connected("10.1.0.0/24", 10);
        connected("fd00:5001::/64", 10);
        connected("10.2.0.0/24", 11);
        neighbour(2, "10.0.1.2", mac(0xfa, 2));
        neighbour(7, "10.0.2.10", mac(0xfa, 0x0a));
        neighbour(10, "10.1.0.2", mac(5, 2));
        neighbour(10, "fd00:5001::2", mac(5, 2));
        neighbour(11, "10.2.0.2", mac(6, 2));
    }
};

// Rules of one device's chain.
std::vector<std::string> dev_commands(const dpo::compile::Program& p, const std::string& dev, std::uint32_t chain) {
    std::vector<std::string> out;
    for (const auto& r : p.rules)
        if (r.dev == dev && r.chain == chain) out.push_back(dpo::tc::to_tc_command(r));
    return out;
}

std::string dev_rule(const dpo::compile::Program& p, const std::string& dev, std::uint32_t chain,
                     const std::string& words) {
    std::string found;
    int n = 0;
    for (const auto& c : dev_commands(p, dev, chain))
        if (c.find(words) != std::string::npos) {
            found = c;
            ++n;
        }
    return n == 1 ? found : "";
}

constexpr std::uint32_t kVxInner = dpo::compile::kChainVxlanBase + dpo::compile::kChainInner;  // 65792

// What mlx5 needs of every rule, whatever the state (notes/mlx5-offload.md): gotos
// only forward, no tunnel_key unset beside a goto, ct first in its rule, chains of
// the VXLAN device apart from the uplink's.
void check_mlx5_shape(const dpo::compile::Program& p) {
    for (const auto& r : p.rules) {
        INFO(dpo::tc::to_tc_command(r));
        bool has_goto = false, has_unset = false;
        for (std::size_t i = 0; i < r.actions.size(); ++i) {
            if (const auto* g = std::get_if<dpo::tc::Goto>(&r.actions[i])) {
                has_goto = true;
                CHECK(g->chain > r.chain);
            }
            has_unset = has_unset || std::holds_alternative<dpo::tc::TunnelUnset>(r.actions[i]);
            if (std::holds_alternative<dpo::tc::Ct>(r.actions[i])) CHECK(i == 0);
        }
        CHECK_FALSE((has_goto && has_unset));
        if (r.dev == "vxlan0" && r.chain != 0) CHECK(r.chain >= dpo::compile::kChainVxlanBase);
        if (r.dev == "p0") CHECK(r.chain < dpo::compile::kChainVxlanBase);
    }
}

}  // namespace

TEST_CASE("group 2 for VXLAN: iface = f(vni) on the VXLAN device's chain 0, local VTEP and port matched, decap implicit") {
    auto p = dpo::compile::compile(vxlan_mapping(), VxlanHypervisor().k);
    CHECK(dev_commands(p, "vxlan0", 0) ==
          std::vector<std::string>{
              "tc filter add dev vxlan0 ingress chain 0 prio 1 protocol all flower dst_mac 02:00:00:00:50:01 "
              "enc_dst_ip 10.0.1.1 enc_key_id 5001 enc_dst_port 4789 action gact goto chain 65792",
              "tc filter add dev vxlan0 ingress chain 0 prio 1 protocol all flower dst_mac 02:00:00:00:60:01 "
              "enc_dst_ip 10.0.2.1 enc_key_id 6001 enc_dst_port 4789 action gact goto chain 65792"});
    // The uplink's shared ingress comes after the decap rules in mlx5's shared table.
    CHECK(dev_commands(p, "p0", 0) ==
          std::vector<std::string>{"tc filter add dev p0 ingress chain 0 prio 2 protocol 802.1Q flower "
                                   "action gact goto chain 1"});
    check_mlx5_shape(p);
}

TEST_CASE("EVPN in -> VLAN out: untagged inner frame, rewrite, push the egress VLAN, out of the uplink") {
    auto p = dpo::compile::compile(vxlan_mapping(), VxlanHypervisor().k);
    CHECK(dev_rule(p, "vxlan0", kVxInner, "dst_ip 10.100.0.2/32") ==
          "tc filter add dev vxlan0 ingress chain 65792 prio 100 protocol ip flower dst_ip 10.100.0.2/32 "
          "action pedit ex munge eth dst set 02:00:00:00:01:02 munge eth src set 02:00:00:00:10:00 munge ip ttl add 255 "
          "pipe action csum iph pipe action vlan push id 100 pipe action mirred egress redirect dev p0 index 3640655972");
    // The kernel's part stays the kernel's on this device too: TTL <= 1, the host, martians.
    CHECK(dev_rule(p, "vxlan0", kVxInner, "prio 1 ") ==
          "tc filter add dev vxlan0 ingress chain 65792 prio 1 protocol ip flower ip_ttl 0x00/0xfe action gact ok");
    CHECK(dev_rule(p, "vxlan0", kVxInner, "dst_ip 10.1.0.1/32") != "");
    CHECK(dev_rule(p, "vxlan0", kVxInner, "src_ip 127.0.0.0/8") != "");
}

TEST_CASE("VLAN in -> ACI out: pop the tag, tunnel from the ACI local VTEP to the interface's remote VTEP") {
    auto p = dpo::compile::compile(vxlan_mapping(), VxlanHypervisor().k);
    CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.2.0.2/32") ==
          "tc filter add dev p0 ingress chain 256 prio 100 protocol 802.1Q flower vlan_ethtype ip dst_ip 10.2.0.2/32 "
          "action pedit ex munge eth dst set 02:00:00:00:06:02 munge eth src set 02:00:00:00:60:01 munge ip ttl add 255 "
          "pipe action csum iph pipe action vlan pop pipe action tunnel_key set src_ip 10.0.2.1 dst_ip 10.0.2.10 "
          "id 6001 dst_port 4789 nocsum pipe action mirred egress redirect dev vxlan0 index 3657439089");
}

TEST_CASE("ACI in -> EVPN out: decapsulated on the VXLAN device, encapsulated back through it") {
    auto p = dpo::compile::compile(vxlan_mapping(), VxlanHypervisor().k);
    CHECK(dev_rule(p, "vxlan0", kVxInner, "dst_ip 10.1.0.2/32") ==
          "tc filter add dev vxlan0 ingress chain 65792 prio 100 protocol ip flower dst_ip 10.1.0.2/32 "
          "action pedit ex munge eth dst set 02:00:00:00:05:02 munge eth src set 02:00:00:00:50:01 munge ip ttl add 255 "
          "pipe action csum iph pipe action tunnel_key set src_ip 10.0.1.1 dst_ip 10.0.1.2 id 5001 dst_port 4789 "
          "nocsum pipe action mirred egress redirect dev vxlan0 index 3657438089");
    // IPv6 over VXLAN: hop limit, no header checksum.
    CHECK(dev_rule(p, "p0", kInner, "dst_ip fd00:5001::2/128") ==
          "tc filter add dev p0 ingress chain 256 prio 200 protocol 802.1Q flower vlan_ethtype ipv6 "
          "dst_ip fd00:5001::2/128 action pedit ex munge eth dst set 02:00:00:00:05:02 munge eth src set "
          "02:00:00:00:50:01 munge ip6 hoplimit add 255 pipe action vlan pop pipe action tunnel_key set src_ip 10.0.1.1 "
          "dst_ip 10.0.1.2 id 5001 dst_port 4789 nocsum pipe action mirred egress redirect dev vxlan0 index 3657438089");
}

TEST_CASE("VXLAN interfaces the fast path cannot carry are left to the kernel, with the reason") {
    auto noted = [](const dpo::compile::Program& p, const std::string& w) {
        return std::any_of(p.notes.begin(), p.notes.end(), [&](const std::string& n) { return n.find(w) != std::string::npos; });
    };
    SECTION("ACI's remote VTEP not reached through the infra VLAN") {
        VxlanHypervisor h;
        h.via("10.0.2.10/32", "10.0.1.2", 2);  // a host route through the EVPN underlay instead
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "egress svi-web: remote VTEP 10.0.2.10 is not reached through the ACI infra VLAN 2 on p0"));
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.2.0.0/24 action gact ok") != "");
        CHECK_FALSE(dev_rule(p, "p0", kInner, "tunnel_key set src_ip 10.0.2.1") != "");
        // ACI ingress still classifies: the decap side does not depend on the way out.
        CHECK(dev_rule(p, "vxlan0", 0, "enc_key_id 6001") != "");
    }
    SECTION("an ECMP underlay toward ACI: fine while every path is the infra VLAN") {
        VxlanHypervisor h;
        h.link(12, "p0.2b", "vlan", 2, 2, mac(0x02, 2));  // a second device on the infra VLAN, say
        auto& r = h.add_route("10.0.2.10/32");
        r.nexthops = {{*IpAddress::parse("10.0.2.1"), 7}, {*IpAddress::parse("10.0.2.2"), 12}};
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.2.0.2/32").find("tunnel_key set src_ip 10.0.2.1") != std::string::npos);
        r.nexthops.back().ifindex = 2;  // one path untagged: not ACI's way
        p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "egress svi-web: remote VTEP 10.0.2.10 is not reached through the ACI infra VLAN 2 on p0"));
    }
    SECTION("no route to the remote VTEP") {
        VxlanHypervisor h;
        h.k.routes.erase(std::remove_if(h.k.routes.begin(), h.k.routes.end(),
                                        [](const dpo::Route& r) { return r.destination.str() == "10.0.1.0/24" ||
                                                                         r.destination.str() == "0.0.0.0/0"; }),
                         h.k.routes.end());
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "egress svi-green: no route to remote VTEP 10.0.1.2"));
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.1.0.2/32") == "");
    }
    SECTION("the VXLAN device down: no VXLAN rules at all, VLAN rules unchanged") {
        VxlanHypervisor h;
        h.k.links[8].up = false;
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "VXLAN device vxlan0 is down: EVPN and ACI interfaces are left to the kernel"));
        CHECK(std::none_of(p.rules.begin(), p.rules.end(), [](const dpo::tc::Rule& r) { return r.dev == "vxlan0"; }));
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.1.0.0/24 action gact ok") != "");
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.200.0.254/32") != "");
    }
    SECTION("a local VTEP the host does not own: the kernel would drop what the fast path encapsulates") {
        VxlanHypervisor h;
        h.k.addresses.erase(std::remove_if(h.k.addresses.begin(), h.k.addresses.end(),
                                           [](const dpo::Address& a) { return a.prefix.str() == "10.0.1.1/24"; }),
                            h.k.addresses.end());
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "egress svi-green: local VTEP 10.0.1.1 is not an address of this host"));
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.1.0.0/24 action gact ok") != "");
        CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.2.0.2/32") != "");  // ACI unaffected
    }
    SECTION("a per-VNI VXLAN device: tunnel_key would be ignored, so nothing goes through it") {
        VxlanHypervisor h;
        h.k.links[8].vxlan_id = 5001;
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "VXLAN device vxlan0 is not in metadata (external) mode: EVPN and ACI interfaces are left to the kernel"));
        CHECK(noted(p, "egress svi-green: VXLAN device vxlan0 is not a metadata-mode VXLAN device that is up on the "
                      "mapping's port"));
        CHECK(std::none_of(p.rules.begin(), p.rules.end(), [](const dpo::tc::Rule& r) { return r.dev == "vxlan0"; }));
    }
    SECTION("a VXLAN device on another UDP port than the mapping's: the paths would disagree") {
        VxlanHypervisor h;
        h.k.links[8].vxlan_port = 8472;
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "VXLAN device vxlan0 uses UDP port 8472, the mapping 4789: EVPN and ACI interfaces are left to the kernel"));
        CHECK(std::none_of(p.rules.begin(), p.rules.end(), [](const dpo::tc::Rule& r) { return r.dev == "vxlan0"; }));
        h.k.links[8].vxlan_port = 4789;
        p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(dev_rule(p, "vxlan0", 0, "enc_key_id 5001") != "");
    }
    SECTION("an SVI down: its VNI is not classified, nor is it an egress") {
        VxlanHypervisor h;
        h.k.links[10].up = false;
        auto p = dpo::compile::compile(vxlan_mapping(), h.k);
        CHECK(noted(p, "interface green: netdev svi-green is down: its VNI is left to the kernel"));
        CHECK(dev_rule(p, "vxlan0", 0, "enc_key_id 5001") == "");
        CHECK(dev_rule(p, "vxlan0", 0, "enc_key_id 6001") != "");
    }
}

TEST_CASE("NAT from an EVPN interface: ct on the VXLAN device, its NAT chains there, first packets come back marked") {
    const auto m = vxlan_mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    dpo::compile::NatState nat;
    nat.punt_ifindex = 42;
    nat.punt_dev = "dpo-inject";
    nat.punt_sink_dev = "dpo-punt";
    nat.subscribers = {{*IpAddress::parse("10.1.0.2"), dpo::nat::ChunkPorts{*IpAddress::parse("198.51.100.3"), 4608, 5119}}};
    auto p = dpo::compile::compile(m, VxlanHypervisor().k, &nat);
    const std::uint32_t vx = dpo::compile::kChainVxlanBase;
    CHECK(dev_rule(p, "vxlan0", kVxInner, "prio 132 ") ==
          "tc filter add dev vxlan0 ingress chain 65792 prio 132 protocol ip flower "
          "action ct zone 7 nat pipe action gact goto chain " + std::to_string(vx + kNatNextHop));
    const std::string tail = "action pedit ex munge eth dst set 02:00:00:00:02:fe munge eth src set 02:00:00:00:20:00 "
                             "munge ip ttl add 255 pipe action csum iph pipe action vlan push id 200 pipe "
                             "action mirred egress redirect dev p0 index 3640656072";
    CHECK(dev_rule(p, "vxlan0", vx + kNatNextHop, "+trk+est") ==
          "tc filter add dev vxlan0 ingress chain " + std::to_string(vx + kNatNextHop) +
              " prio 1 protocol ip flower ct_state +trk+est " + tail);
    CHECK(dev_rule(p, "vxlan0", vx + kNatNextHop, "+trk+new") ==
          "tc filter add dev vxlan0 ingress chain " + std::to_string(vx + kNatNextHop) +
              " prio 4 protocol ip flower ct_state +trk+new action gact goto chain " +
              std::to_string(vx + dpo::compile::kChainSnat));
    CHECK(dev_commands(p, "vxlan0", vx + dpo::compile::kChainSnat) ==
          std::vector<std::string>{
              "tc filter add dev vxlan0 ingress chain 98304 prio 1 protocol ip flower src_ip 10.1.0.2/32 ct_state "
              "+trk+new action ct commit zone 7 src addr 198.51.100.3-198.51.100.3 port 4608-5119 pipe "
              "action gact goto chain 98305",
              "tc filter add dev vxlan0 ingress chain 98304 prio 2 protocol ip flower ct_state +trk+new "
              "action police pkts_rate 1000 pkts_burst 100 conform-exceed drop/pipe "
              "action mirred egress redirect dev dpo-inject index 3642753024"});
    // The uplink has its own subscriber rule: a subscriber may come in either way.
    CHECK(dev_rule(p, "p0", dpo::compile::kChainSnat, "src_ip 10.1.0.2/32") != "");
    // The way back: tagged frames to the uplink, untagged ones into the VXLAN device
    // with a mark no wire packet has, taken to the inner chain.
    CHECK(dev_commands(p, "dpo-inject", 0) ==
          std::vector<std::string>{
              "tc filter add dev dpo-inject ingress chain 0 prio 1 protocol 802.1Q flower "
              "action mirred ingress redirect dev p0 index 3642753025",
              "tc filter add dev dpo-inject ingress chain 0 prio 2 protocol ip flower action tunnel_key set "
              "src_ip 0.0.0.0 dst_ip 0.0.0.0 id 0 dst_port 0 nocsum pipe action mirred ingress redirect dev vxlan0 "
              "index 3642753026"});
    CHECK(p.rules.end() != std::find(p.rules.begin(), p.rules.end(), dpo::compile::reinject_vlan_rule("dpo-inject", "p0", 2)));
    CHECK(dev_rule(p, "vxlan0", 0, "prio 2 ") ==
          "tc filter add dev vxlan0 ingress chain 0 prio 2 protocol ip flower enc_key_id 0 enc_dst_port 0 "
          "action gact goto chain 65792");
    // The daemon's end of the punt pair drops what its socket has read.
    CHECK(dev_commands(p, "dpo-punt", 0) ==
          std::vector<std::string>{"tc filter add dev dpo-punt ingress chain 0 prio 1 protocol all flower action gact drop"});
    // Replies come in on transit (the uplink) and leave encapsulated toward green.
    CHECK(dev_rule(p, "p0", dpo::compile::kChainOuterTracked, "dst_ip 10.1.0.2/32") ==
          "tc filter add dev p0 ingress chain 513 prio 100 protocol 802.1Q flower vlan_ethtype ip dst_ip 10.1.0.2/32 "
          "action pedit ex munge eth dst set 02:00:00:00:05:02 munge eth src set 02:00:00:00:50:01 munge ip ttl add 255 "
          "pipe action csum iph pipe action vlan pop pipe action tunnel_key set src_ip 10.0.1.1 dst_ip 10.0.1.2 "
          "id 5001 dst_port 4789 nocsum pipe action mirred egress redirect dev vxlan0 index 3657438089");
    check_mlx5_shape(p);
}

TEST_CASE("an outer EVPN interface: NAT first on the VXLAN device too") {
    auto m = vxlan_mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    for (auto& i : m.interfaces)
        if (i.name == "green") i.role = dpo::Role::Outer;
    dpo::compile::NatState nat;
    nat.punt_ifindex = 42;
    nat.punt_dev = "dpo-inject";
    auto p = dpo::compile::compile(m, VxlanHypervisor().k, &nat);
    CHECK(dev_rule(p, "vxlan0", 0, "enc_key_id 5001") ==
          "tc filter add dev vxlan0 ingress chain 0 prio 1 protocol all flower dst_mac 02:00:00:00:50:01 "
          "enc_dst_ip 10.0.1.1 enc_key_id 5001 enc_dst_port 4789 action gact goto chain 66048");
    CHECK(dev_rule(p, "vxlan0", 66048, "prio 50 ") ==
          "tc filter add dev vxlan0 ingress chain 66048 prio 50 protocol ip flower action ct zone 7 nat pipe "
          "action gact goto chain 66049");
    CHECK(dev_rule(p, "vxlan0", 66049, "prio 7 ") ==
          "tc filter add dev vxlan0 ingress chain 66049 prio 7 protocol ip flower ct_state +trk+new "
          "action gact drop index 3643801601");
    // VLAN inner -> EVPN outer: NAT on the uplink, then the encapsulating tail. The
    // connected host 10.1.0.2 is a next hop of its own through NAT.
    const std::string rule = dev_rule(p, "p0", kInner, "dst_ip 10.1.0.2/32");
    REQUIRE(rule.find("action ct zone 7 nat pipe action gact goto chain ") != std::string::npos);
    const auto nat_chain = static_cast<std::uint32_t>(std::stoul(rule.substr(rule.rfind(' ') + 1)));
    CHECK(dev_rule(p, "p0", nat_chain, "+trk+est") ==
          "tc filter add dev p0 ingress chain " + std::to_string(nat_chain) +
              " prio 1 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+est "
              "action pedit ex munge eth dst set 02:00:00:00:05:02 munge eth src set 02:00:00:00:50:01 munge ip ttl add 255 "
              "pipe action csum iph pipe action vlan pop pipe action tunnel_key set src_ip 10.0.1.1 dst_ip 10.0.1.2 "
              "id 5001 dst_port 4789 nocsum pipe action mirred egress redirect dev vxlan0 index 3657438089");
    // web (ACI) is still inner: its first packets need the marked way back.
    CHECK(dev_commands(p, "dpo-inject", 0).size() == 2);
    CHECK(dev_rule(p, "vxlan0", 0, "prio 2 ") != "");
    check_mlx5_shape(p);

    // With no inner VXLAN interface left, nothing is punted from the VXLAN device:
    // no marked way back, only the uplink's.
    for (auto& i : m.interfaces)
        if (i.name == "web") i.role = dpo::Role::Outer;
    p = dpo::compile::compile(m, VxlanHypervisor().k, &nat);
    CHECK(dev_commands(p, "dpo-inject", 0) ==
          std::vector<std::string>{"tc filter add dev dpo-inject ingress chain 0 prio 1 protocol 802.1Q flower "
                                   "action mirred ingress redirect dev p0 index 3642753025"});
    CHECK(dev_rule(p, "vxlan0", 0, "prio 2 ") == "");
    // And without a punt path, first packets are dropped and counted, not punted.
    nat.punt_ifindex = 0;
    p = dpo::compile::compile(m, VxlanHypervisor().k, &nat);
    CHECK(dev_commands(p, "dpo-inject", 0).empty());
    CHECK(dev_rule(p, "p0", dpo::compile::kChainSnat, "prio 2 ") ==
          "tc filter add dev p0 ingress chain 32768 prio 2 protocol 802.1Q flower vlan_ethtype ip ct_state +trk+new "
          "action gact drop index 3643801604");
}

TEST_CASE("rule devices: the uplink and, with a vxlan section, the VXLAN device") {
    CHECK(dpo::compile::rule_devices(mapping()) == std::vector<std::string>{"p0"});
    CHECK(dpo::compile::rule_devices(vxlan_mapping()) == std::vector<std::string>{"p0", "vxlan0"});
}

TEST_CASE("an IPv6 EVPN underlay: decap on the IPv6 VTEP, encap with an outer UDP checksum") {
    auto text = std::string(kVxlanMapping);
    auto swap = [&text](const std::string& from, const std::string& to) {
        const auto at = text.find(from);
        REQUIRE(at != std::string::npos);
        text.replace(at, from.size(), to);
    };
    swap(R"("local_vtep": "10.0.1.1")", R"("local_vtep": "fd00:f::1")");
    swap(R"("remote_vtep": "10.0.1.2")", R"("remote_vtep": "fd00:f::2")");
    auto m = dpo::parse_mapping(text, "m.json");
    REQUIRE(m.ok());
    VxlanHypervisor h;
    h.address(2, "fd00:f::1/64");
    h.connected("fd00:f::/64", 2);
    auto p = dpo::compile::compile(*m, h.k);
    CHECK(dev_rule(p, "vxlan0", 0, "enc_key_id 5001") ==
          "tc filter add dev vxlan0 ingress chain 0 prio 1 protocol all flower dst_mac 02:00:00:00:50:01 "
          "enc_dst_ip fd00:f::1 enc_key_id 5001 enc_dst_port 4789 action gact goto chain 65792");
    CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.1.0.2/32").find(
              "action tunnel_key set src_ip fd00:f::1 dst_ip fd00:f::2 id 5001 dst_port 4789 csum pipe") !=
          std::string::npos);
    // ACI stays on its IPv4 underlay, without a checksum.
    CHECK(dev_rule(p, "p0", kInner, "dst_ip 10.2.0.2/32").find("dst_ip 10.0.2.10 id 6001 dst_port 4789 nocsum") !=
          std::string::npos);
    check_mlx5_shape(p);
}

TEST_CASE("the VXLAN program is a function of the state, and its rules are unique by identity") {
    const auto m = vxlan_mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    dpo::compile::NatState nat;
    nat.punt_ifindex = 42;
    nat.punt_dev = "dpo-inject";
    nat.subscribers = {{*IpAddress::parse("10.1.0.2"), dpo::nat::ChunkPorts{*IpAddress::parse("198.51.100.3"), 4608, 5119}},
                       {*IpAddress::parse("10.100.0.2"), std::nullopt}};
    VxlanHypervisor a;
    VxlanHypervisor b;
    std::reverse(b.k.routes.begin(), b.k.routes.end());
    std::reverse(b.k.neighbours.begin(), b.k.neighbours.end());
    std::reverse(b.k.addresses.begin(), b.k.addresses.end());
    const auto pa = dpo::compile::compile(m, a.k, &nat);
    const auto pb = dpo::compile::compile(m, b.k, &nat);
    CHECK(pa.rules == pb.rules);
    std::set<dpo::tc::Identity> ids;
    for (const auto& r : pa.rules) CHECK(ids.insert(r.identity()).second);
    check_mlx5_shape(pa);
}

TEST_CASE("the NAT state read back from installed rules compiles to the same program") {
    const auto m = vxlan_mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    dpo::compile::NatState nat;
    nat.punt_ifindex = 42;
    nat.punt_dev = "dpo-inject";
    nat.subscribers = {{*IpAddress::parse("10.1.0.2"), dpo::nat::ChunkPorts{*IpAddress::parse("198.51.100.3"), 4608, 5119}},
                       {*IpAddress::parse("10.100.0.2"), std::nullopt, dpo::nat::Refusal::PoolEmpty},
                       {*IpAddress::parse("10.100.0.3"), std::nullopt, dpo::nat::Refusal::ChunkLimit}};
    const auto p = dpo::compile::compile(m, VxlanHypervisor().k, &nat);
    const auto back = dpo::compile::nat_state_from(p.rules);
    CHECK(back.punt_ifindex == 42);
    CHECK(back.punt_dev == "dpo-inject");
    REQUIRE(back.subscribers.size() == 3);
    CHECK(dpo::compile::compile(m, VxlanHypervisor().k, &back).rules == p.rules);
}

// The counters' names (counter_names.hpp) must cover every shared action the compiler
// writes: an index it made up that the naming does not know would show as nothing in
// `dpoffloadctl counters` and the metrics.
TEST_CASE("every shared drop and redirect index the compiler writes has a counter name, egress by interface") {
    const auto m = vxlan_mapping(R"("nat": {"zone": 7, "pool": ["198.51.100.0/28"]})");
    dpo::compile::NatState nat;
    nat.punt_ifindex = 42;
    nat.punt_dev = "dpo-inject";
    nat.punt_sink_dev = "dpo-punt";
    nat.subscribers = {{*IpAddress::parse("10.1.0.2"), dpo::nat::ChunkPorts{*IpAddress::parse("198.51.100.3"), 4608, 5119}},
                       {*IpAddress::parse("10.100.0.2"), std::nullopt, dpo::nat::Refusal::PoolEmpty},
                       {*IpAddress::parse("10.100.0.3"), std::nullopt, dpo::nat::Refusal::ChunkLimit}};
    const auto p = dpo::compile::compile(m, VxlanHypervisor().k, &nat);
    const auto names = dpo::compile::counter_names(m);
    std::set<std::string> egress, drops;
    for (const auto& r : p.rules)
        for (const auto& a : r.actions) {
            std::uint32_t index = 0;
            if (const auto* d = std::get_if<dpo::tc::Drop>(&a)) index = d->index;
            else if (const auto* x = std::get_if<dpo::tc::Redirect>(&a)) index = x->index;
            if (!index) continue;
            const auto n = dpo::compile::counter_name(m, index);
            INFO(r.why << ": index " << index);
            REQUIRE(n);
            CHECK(std::find(names.begin(), names.end(), *n) != names.end());
            (n->kind == dpo::compile::CounterKind::Egress ? egress : drops).insert(n->name);
        }
    CHECK(drops == std::set<std::string>{"chunk-limit", "invalid", "outer-new", "pool-empty"});
    // Every egress the program uses is a mapped interface by name (or the punt path).
    for (const auto& e : egress) {
        const bool mapped = std::any_of(m.interfaces.begin(), m.interfaces.end(), [&](const dpo::Interface& i) {
            return i.name == e;
        });
        CHECK((mapped || e == "nat-punt" || e == "nat-reinject" || e == "nat-reinject-vxlan"));
    }
    CHECK(egress.count("nat-punt"));
    CHECK(egress.size() >= 3);
}

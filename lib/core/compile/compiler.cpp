// SPDX-License-Identifier: GPL-2.0-or-later
#include "compiler.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>

#include "pipeline.hpp"
#include "route_lookup.hpp"

namespace dpo::compile {

namespace {

constexpr std::uint8_t kRtnUnicast = 1;

std::uint32_t process_chain(Role r) { return r == Role::Inner ? kChainInner : kChainOuter; }

std::uint16_t route_prio(const IpPrefix& p) {
    return p.address.family == Family::V4 ? static_cast<std::uint16_t>(kPrioRouteV4Base + (32 - p.length))
                                          : static_cast<std::uint16_t>(kPrioRouteV6Base + (128 - p.length));
}

std::uint16_t ip_ethtype(Family f) { return f == Family::V4 ? tc::kEthIpv4 : tc::kEthIpv6; }

// Never routed: link-local and multicast destinations belong to the kernel.
bool never_routed(const IpAddress& a) {
    if (a.family == Family::V4) return (a.bytes[0] >= 224 && a.bytes[0] <= 239) || (a.bytes[0] == 169 && a.bytes[1] == 254);
    return a.bytes[0] == 0xff || (a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80);
}

// Neighbours by (device, address): a gateway lookup per route must not scan them all.
class NeighbourIndex {
public:
    explicit NeighbourIndex(const std::vector<Neighbour>& ns) {
        index_.reserve(ns.size());
        for (const Neighbour& n : ns) index_.emplace(Key{n.ifindex, n.address}, &n);
    }
    const Neighbour* find(int ifindex, const IpAddress& a) const {
        const auto it = index_.find(Key{ifindex, a});
        return it == index_.end() ? nullptr : it->second;
    }

private:
    struct Key {
        int ifindex;
        IpAddress address;
        bool operator==(const Key&) const = default;
    };
    struct Hash {
        std::size_t operator()(const Key& k) const noexcept {
            std::size_t h = static_cast<std::size_t>(k.ifindex);
            for (auto b : k.address.bytes) h = h * 131 + b;
            return h;
        }
    };
    std::unordered_map<Key, const Neighbour*, Hash> index_;
};

// Covered by the 127.0.0.0/8 and ::1 rules already.
bool is_loopback(const IpAddress& a) {
    if (a.family == Family::V4) return a.bytes[0] == 127;
    return a == *IpAddress::parse("::1");
}

class RoutingChain;

// Builds the NAT stage's rules as the routing chains ask for them.
class NatStage {
public:
    NatStage(const NatState& state, std::uint16_t zone, const Link& uplink, Program& out)
        : state_(state), zone_(zone), uplink_(uplink), out_(out) {}

    void outer_lookup(RoutingChain& chain);
    // An inner -> outer forwarding rule: becomes ct + goto the adjacency's chain.
    void toward_outside(tc::Rule r, const Interface& egress_if, const Link& egress_link, const Mac& nexthop);
    // Numbers the adjacency chains and fills them in.
    void finish(const RoutingChain& chain);

private:
    struct Adjacency {
        Family family;
        std::uint16_t vid;
        Mac source;
        Mac nexthop;
        auto operator<=>(const Adjacency&) const = default;
    };
    struct Tail {
        const Interface* egress;
        const Link* link;
    };
    tc::Rule tracked(std::uint32_t chain, std::uint16_t prio, Family f, std::uint16_t state, std::string why);

    const NatState& state_;
    std::uint16_t zone_;
    const Link& uplink_;
    Program& out_;
    std::map<Adjacency, Tail> adjacencies_;
    std::vector<std::pair<std::size_t, Adjacency>> pending_;  // rules whose goto waits for a number
};

// The routing chain of one role, for VLAN-tagged traffic on the uplink.
class RoutingChain {
public:
    RoutingChain(const Mapping& m, const KernelState& k, const Link& uplink, Role role, const RouteLookup& routes,
                 const NeighbourIndex& neighbours, NatStage* nat, Program& out)
        : m_(m), k_(k), uplink_(uplink), role_(role), chain_(process_chain(role)), out_(out), routes_(routes),
          neighbours_(neighbours), nat_(nat) {}

    void emit() {
        ttl_expiring(Family::V4);
        ttl_expiring(Family::V6);
        to_the_host();
        if (nat_ && role_ == Role::Outer) {
            // NAT first: replies are translated back, then routed in the tracked chain;
            // what is not a reply (new, invalid) is dropped there.
            nat_->outer_lookup(*this);
            chain_ = kChainOuterTracked;
        }
        for (const Route* r : routes_.best_routes()) route(*r);
        for (const Neighbour& n : k_.neighbours) connected_neighbour(n);
    }

    tc::Rule rule(std::uint16_t prio, Family f, std::string why) {
        tc::Rule r;
        r.dev = m_.uplink;
        r.chain = chain_;
        r.prio = prio;
        r.protocol = tc::kEth8021Q;  // the tag is still on: it comes off only in a forwarding rule
        r.match.vlan_ethtype = ip_ethtype(f);
        r.why = std::move(why);
        return r;
    }

private:

    void to_kernel(tc::Rule r) {
        r.actions = {tc::Pass{}};
        out_.rules.push_back(std::move(r));
    }

    // TTL / hop limit 0 or 1: the kernel answers with ICMP time exceeded.
    void ttl_expiring(Family f) {
        auto r = rule(f == Family::V4 ? kPrioTtlV4 : kPrioTtlV6, f, "ttl <= 1: the kernel answers time exceeded");
        r.match.ip_ttl = tc::Masked<std::uint8_t>{0, 0xfe};
        to_kernel(std::move(r));
    }

    void to_the_host() {
        std::set<IpAddress> local;
        for (const Address& a : k_.addresses)
            if (!never_routed(a.prefix.address) && !is_loopback(a.prefix.address)) local.insert(a.prefix.address);
        for (const IpAddress& a : local) {
            const bool v4 = a.family == Family::V4;
            auto r = rule(v4 ? kPrioHostV4 : kPrioHostV6, a.family, "to the host itself");
            r.match.dst_ip = IpPrefix{a, static_cast<std::uint8_t>(v4 ? 32 : 128)};
            to_kernel(std::move(r));
        }
        // Destinations the kernel never forwards: multicast, broadcast, link-local,
        // loopback, "this network".
        for (const char* text : {"224.0.0.0/4", "255.255.255.255/32", "169.254.0.0/16", "127.0.0.0/8",
                                 "0.0.0.0/8", "ff00::/8", "fe80::/10", "::1/128", "::/128"}) {
            const IpPrefix p = *IpPrefix::parse(text);
            const bool v4 = p.address.family == Family::V4;
            auto r = rule(v4 ? kPrioHostV4 : kPrioHostV6, p.address.family, "not forwarded: special destination");
            r.match.dst_ip = p;
            to_kernel(std::move(r));
        }
        // Sources the kernel drops as martians: it must see them, and decide.
        for (const char* text : {"127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32", "fe80::/10",
                                 "ff00::/8", "::1/128", "::/128"}) {
            const IpPrefix p = *IpPrefix::parse(text);
            const bool v4 = p.address.family == Family::V4;
            auto r = rule(v4 ? kPrioMartianSrcV4 : kPrioMartianSrcV6, p.address.family, "not forwarded: martian source");
            r.match.src_ip = p;
            to_kernel(std::move(r));
        }
    }

    // The egress interface a nexthop device stands for, if the fast path can send there.
    const Interface* egress(int ifindex) const {
        const auto it = k_.links.find(ifindex);
        // A device that is down sends nothing in the kernel either.
        if (it == k_.links.end() || !it->second.up) return nullptr;
        const Interface* i = m_.find_by_netdev(it->second.name);
        if (!i || !std::holds_alternative<VlanEncap>(i->encap)) return nullptr;
        return i;
    }

    // Inner -> outer with `nat` configured goes through the NAT stage.
    bool through_nat(const Interface& egress_if) const {
        return role_ == Role::Inner && egress_if.role == Role::Outer && m_.nat.has_value();
    }
    // Why the fast path cannot carry traffic toward `egress_if` from this role, or "".
    std::string refusal(const Interface& egress_if, Family f) const {
        if (through_nat(egress_if) && f == Family::V4 && !nat_)
            return "inner -> outer IPv4 needs NAT, and the NAT stage is not running";
        return "";
    }

    const Neighbour* resolved(int ifindex, const IpAddress& a) const {
        const Neighbour* n = neighbours_.find(ifindex, a);
        return n && n->state == NeighbourState::Resolved && n->mac ? n : nullptr;
    }

    // Routing, re-tag and egress: groups 2 (pop), 3 and 4 of the flow chart. Toward
    // NAT, the rule only looks the connection up and continues in the adjacency's
    // chain, which carries the same tail once the connection state is known.
    void forward(tc::Rule r, const Interface& egress_if, const Link& egress_link, const Mac& nexthop_mac) {
        if (nat_ && through_nat(egress_if)) return nat_->toward_outside(std::move(r), egress_if, egress_link, nexthop_mac);
        r.actions = forwarding_tail(r.match.vlan_ethtype == tc::kEthIpv4, egress_if, egress_link, nexthop_mac);
        out_.rules.push_back(std::move(r));
    }

public:
    std::vector<tc::Action> forwarding_tail(bool v4, const Interface& egress_if, const Link& egress_link,
                                            const Mac& nexthop_mac) const {
        const auto vid = std::get<VlanEncap>(egress_if.encap).vid;
        tc::Rewrite rw;
        rw.eth_dst = nexthop_mac;
        rw.eth_src = egress_link.mac;
        rw.dec_ttl = v4;
        rw.dec_hoplimit = !v4;
        // Built in one piece: GCC 12 warns falsely (maybe-uninitialized) on
        // push_back of variant temporaries here.
        std::vector<tc::Action> actions{rw, tc::CsumIp4h{}, tc::VlanPop{}, tc::VlanPush{vid},
                                        tc::Redirect{uplink_.ifindex, uplink_.name, kEgressCounterVlanBase + vid}};
        if (!v4) actions.erase(actions.begin() + 1);  // no header checksum in IPv6
        return actions;
    }

private:

    void route(const Route& rt) {
        const IpPrefix& dst = rt.destination;
        const Family f = dst.address.family;
        if (never_routed(dst.address) && dst.length > 0) return;  // covered by to_the_host()
        auto r = rule(route_prio(dst), f, "route " + dst.str());
        if (dst.length > 0) r.match.dst_ip = dst;  // a zero-length prefix is left unmatched
        auto leave = [&](const std::string& why) {
            out_.notes.push_back("route " + dst.str() + ": " + why + ": left to the kernel");
            to_kernel(std::move(r));
        };
        if (rt.type != kRtnUnicast) return leave("not a unicast route");
        if (rt.nexthops.size() != 1) return leave("multipath");
        const Nexthop& nh = rt.nexthops.front();
        const Interface* out_if = egress(nh.ifindex);
        if (!out_if) return leave("egress " + k_.link_name(nh.ifindex) + " is not a mapped VLAN interface that is up");
        if (auto why = refusal(*out_if, f); !why.empty()) return leave(why);
        if (!nh.gateway) {
            // Directly connected: each resolved neighbour gets its own rule; the rest
            // of the prefix goes to the kernel, which resolves and then tells us.
            return to_kernel(std::move(r));
        }
        const Neighbour* n = resolved(nh.ifindex, *nh.gateway);
        if (!n) return leave("gateway " + nh.gateway->str() + " unresolved");
        forward(std::move(r), *out_if, k_.links.at(nh.ifindex), *n->mac);
    }

    // A resolved neighbour whose longest-prefix route is the connected route on its
    // own device: forward to its MAC with a host rule.
    void connected_neighbour(const Neighbour& n) {
        if (n.state != NeighbourState::Resolved || !n.mac || never_routed(n.address)) return;
        const Route* rt = routes_.lookup(n.address);
        if (!rt || rt->type != kRtnUnicast || rt->nexthops.size() != 1) return;
        const Nexthop& nh = rt->nexthops.front();
        if (nh.gateway || nh.ifindex != n.ifindex) return;
        const Interface* out_if = egress(n.ifindex);
        const Family f = n.address.family;
        if (!out_if || !refusal(*out_if, f).empty()) return;
        const IpPrefix host{n.address, static_cast<std::uint8_t>(f == Family::V4 ? 32 : 128)};
        if (routes_.exact(host)) return;  // a host route of its own decides
        auto r = rule(route_prio(host), f, "neighbour " + n.address.str() + " on " + out_if->netdev);
        r.match.dst_ip = host;
        forward(std::move(r), *out_if, k_.links.at(n.ifindex), *n.mac);
    }

    const Mapping& m_;
    const KernelState& k_;
    const Link& uplink_;
    Role role_;
    std::uint32_t chain_;
    Program& out_;
    const RouteLookup& routes_;
    const NeighbourIndex& neighbours_;
    NatStage* nat_;
};

// The outer side's lookup and the inner side's adjacency chains (docs/nat-plan.md).
void NatStage::outer_lookup(RoutingChain& chain) {
    for (Family f : {Family::V4, Family::V6}) {
        const bool v4 = f == Family::V4;
        auto r = chain.rule(v4 ? kPrioOuterCtV4 : kPrioOuterCtV6, f, "nat: outer ingress, translate replies back");
        r.actions = {tc::Ct{zone_, false, v4, false, std::nullopt}, tc::Goto{kChainOuterTracked}};
        out_.rules.push_back(std::move(r));
        r = tracked(kChainOuterTracked, v4 ? 7 : 8, f, tc::kCtNew, "nat: outer new: count, drop");
        r.actions = {tc::Drop{kDropOuterNew}};
        out_.rules.push_back(std::move(r));
        r = tracked(kChainOuterTracked, v4 ? 9 : 10, f, tc::kCtInvalid, "nat: outer invalid: count, drop");
        r.actions = {tc::Drop{kDropInvalid}};
        out_.rules.push_back(std::move(r));
    }
}

tc::Rule NatStage::tracked(std::uint32_t chain, std::uint16_t prio, Family f, std::uint16_t state, std::string why) {
    tc::Rule r;
    r.dev = uplink_.name;
    r.chain = chain;
    r.prio = prio;
    r.protocol = tc::kEth8021Q;
    r.match.vlan_ethtype = ip_ethtype(f);
    r.match.ct_state = tc::Masked<std::uint16_t>{static_cast<std::uint16_t>(tc::kCtTracked | state),
                                                 static_cast<std::uint16_t>(tc::kCtTracked | state)};
    r.why = std::move(why);
    return r;
}

void NatStage::toward_outside(tc::Rule r, const Interface& egress_if, const Link& egress_link, const Mac& nexthop) {
    const bool v4 = r.match.vlan_ethtype == tc::kEthIpv4;
    Adjacency a{v4 ? Family::V4 : Family::V6, std::get<VlanEncap>(egress_if.encap).vid, egress_link.mac, nexthop};
    adjacencies_.try_emplace(a, Tail{&egress_if, &egress_link});
    // ct first in its rule (mlx5); the translation itself comes from ct, never pedit.
    r.actions = {tc::Ct{zone_, false, v4, false, std::nullopt}, tc::Goto{0}};
    pending_.emplace_back(out_.rules.size(), a);
    out_.rules.push_back(std::move(r));
}

void NatStage::finish(const RoutingChain& chain) {
    // Chains are numbered in a sorted order, so the same state gives the same numbers.
    std::uint32_t next = kChainNatAdjacencyBase;
    std::map<Adjacency, std::uint32_t> number;
    for (const auto& [a, _] : adjacencies_) number[a] = next++;
    for (const auto& [index, a] : pending_) std::get<tc::Goto>(out_.rules[index].actions[1]).chain = number.at(a);
    for (const auto& [a, tail] : adjacencies_) {
        const std::uint32_t c = number.at(a);
        const bool v4 = a.family == Family::V4;
        const auto fwd = chain.forwarding_tail(v4, *tail.egress, *tail.link, a.nexthop);
        const std::uint16_t base = v4 ? 1 : 11;
        const std::string to = "nat: toward vlan " + std::to_string(a.vid) + " via " + mac_str(a.nexthop) + ": ";
        auto est = tracked(c, base, a.family, tc::kCtEstablished, to + "established: offloaded");
        est.actions = fwd;
        out_.rules.push_back(std::move(est));
        auto rel = tracked(c, static_cast<std::uint16_t>(base + 1), a.family, tc::kCtRelated, to + "related");
        rel.actions = fwd;
        out_.rules.push_back(std::move(rel));
        auto inv = tracked(c, static_cast<std::uint16_t>(base + 4), a.family, tc::kCtInvalid, to + "invalid: drop");
        inv.actions = {tc::Drop{kDropInvalid}};
        out_.rules.push_back(std::move(inv));
        if (!v4) {
            // IPv6 is not translated; committing makes its replies "established".
            auto n = tracked(c, static_cast<std::uint16_t>(base + 2), a.family, tc::kCtNew, to + "new: commit");
            n.actions = fwd;
            n.actions.insert(n.actions.begin(), tc::Ct{zone_, true, false, false, std::nullopt});
            out_.rules.push_back(std::move(n));
            continue;
        }
        for (const NatSubscriber& s : state_.subscribers) {
            auto n = tracked(c, static_cast<std::uint16_t>(base + 2), a.family, tc::kCtNew,
                             to + "new from subscriber " + s.address.str());
            n.match.src_ip = IpPrefix{s.address, 32};
            if (s.commit) {
                n.actions = fwd;
                n.actions.insert(n.actions.begin(),
                                 tc::Ct{zone_, true, false, false,
                                        tc::SnatRange{s.commit->address, s.commit->address, s.commit->first,
                                                      s.commit->last}});
            } else {
                // No ports left for this subscriber: drop, counted by reason.
                n.actions = {tc::Drop{s.refusal == nat::Refusal::PoolEmpty ? kDropPoolEmpty : kDropChunkLimit}};
            }
            out_.rules.push_back(std::move(n));
        }
        // A subscriber without a chunk: its first packet goes to the daemon, which
        // pulls a chunk, installs the rule above and puts the packet back.
        auto first = tracked(c, static_cast<std::uint16_t>(base + 3), a.family, tc::kCtNew, to + "new, no chunk yet");
        if (state_.punt_ifindex)
            first.actions = {tc::Redirect{state_.punt_ifindex, state_.punt_dev, kPuntIndex}};
        else
            first.actions = {tc::Drop{kDropNoPunt}};
        out_.rules.push_back(std::move(first));
    }
}

}  // namespace

Program compile(const Mapping& m, const KernelState& k, const NatState* nat) {
    Program p;
    const Link* uplink = k.link_by_name(m.uplink);
    if (!uplink) {
        p.notes.push_back("uplink " + m.uplink + " does not exist: no rules");
        return p;
    }

    // Group 1: shared ingress.
    tc::Rule ingress;
    ingress.dev = m.uplink;
    ingress.chain = kChainSharedIngress;
    ingress.prio = kPrioIngress;
    ingress.protocol = tc::kEth8021Q;
    ingress.actions = {tc::Goto{kChainClassify}};
    ingress.why = "shared ingress";
    p.rules.push_back(ingress);

    // Group 2: iface = f(vlan). The tag stays on until a rule decides to forward.
    std::set<Role> roles;
    for (const Interface& i : m.interfaces) {
        const auto* vlan = std::get_if<VlanEncap>(&i.encap);
        if (!vlan) continue;
        // The kernel takes in nothing on a VLAN whose device is missing or down: the
        // fast path must not carry what the slow path would not.
        const Link* netdev = k.link_by_name(i.netdev);
        if (!netdev || !netdev->up) {
            p.notes.push_back("interface " + i.name + ": netdev " + i.netdev + (netdev ? " is down" : " does not exist") +
                              ": its VLAN is left to the kernel");
            continue;
        }
        tc::Rule r;
        r.dev = m.uplink;
        r.chain = kChainClassify;
        r.prio = kPrioClassify;
        r.protocol = tc::kEth8021Q;
        r.match.vlan_id = vlan->vid;
        // Only frames addressed to the router are routed: flooded unknown unicast and
        // broadcast on the VLAN are the kernel's (it drops or answers them).
        r.match.dst_mac = netdev->mac;
        r.actions = {tc::Goto{process_chain(i.role)}};
        r.why = "iface " + i.name + " = f(vlan " + std::to_string(vlan->vid) + ")";
        p.rules.push_back(std::move(r));
        roles.insert(i.role);
    }

    // Group 3: process packet, per role of the ingress interface.
    const RouteLookup routes(k.routes, m.route_table);
    const NeighbourIndex neighbours(k.neighbours);
    std::optional<NatStage> stage;
    if (nat && m.nat) stage.emplace(*nat, m.nat->zone, *uplink, p);
    NatStage* nat_stage = stage ? &*stage : nullptr;
    for (Role role : roles) {
        RoutingChain chain(m, k, *uplink, role, routes, neighbours, nat_stage, p);
        chain.emit();
        if (nat_stage && role == Role::Inner) nat_stage->finish(chain);
    }

    // Sorted by place, then identity: the order is for people and golden tests.
    std::vector<std::size_t> order(p.rules.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const tc::Rule& x = p.rules[a];
        const tc::Rule& y = p.rules[b];
        return std::tie(x.dev, x.chain, x.prio, x.protocol, x.match) < std::tie(y.dev, y.chain, y.prio, y.protocol, y.match);
    });
    std::vector<tc::Rule> sorted;
    sorted.reserve(p.rules.size());
    for (std::size_t i : order) sorted.push_back(std::move(p.rules[i]));
    p.rules = std::move(sorted);
    std::sort(p.notes.begin(), p.notes.end());
    p.notes.erase(std::unique(p.notes.begin(), p.notes.end()), p.notes.end());
    return p;
}

}  // namespace dpo::compile

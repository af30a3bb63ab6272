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

// The VXLAN side of an EVPN or ACI interface.
struct Tunnel {
    std::uint32_t vni = 0;
    IpAddress remote_vtep;
    bool aci = false;
};
std::optional<Tunnel> tunnel_of(const Interface& i) {
    if (const auto* e = std::get_if<EvpnEncap>(&i.encap)) return Tunnel{e->vni, e->remote_vtep, false};
    if (const auto* a = std::get_if<AciEncap>(&i.encap)) return Tunnel{a->vni, a->remote_vtep, true};
    return std::nullopt;
}
// The loader guarantees the fabric section of every VXLAN interface.
IpAddress local_vtep(const Mapping& m, const Tunnel& t) { return t.aci ? m.aci->local_vtep : m.evpn->local_vtep; }

// Where packets enter the pipeline: the uplink, with the VLAN tag still on, or the
// VXLAN device, with the inner frame already decapsulated (untagged).
struct Ingress {
    const Link* link;
    bool tagged;
    std::uint32_t base;  // added to the chain numbers of pipeline.hpp (chain 0 excepted)
};

// Group 3 and 4 for one interface: how a packet leaves through it. Found once per
// compile; routes only look it up.
struct EgressPort {
    const Interface* iface;
    const Link* netdev;                   // the slow path's device: source MAC, neighbours
    std::optional<std::uint16_t> vid;     // push vlan
    std::optional<tc::TunnelSet> tunnel;  // encapsulate (EVPN, ACI)
    const Link* out;                      // the uplink or the VXLAN device
    std::uint32_t counter;                // the shared mirred's index: the egress counter
};

// Which interfaces the fast path can send through, and why not the others.
class EgressPorts {
public:
    // `routes` is the mapping's table; the underlay toward remote VTEPs is the main
    // table, the same lookup unless the mapping follows another table.
    EgressPorts(const Mapping& m, const KernelState& k, const Link& uplink, const RouteLookup& routes) {
        std::optional<RouteLookup> main_table;
        const RouteLookup* underlay = m.route_table == kMainRouteTable ? &routes : nullptr;
        for (const Interface& i : m.interfaces) {
            const Link* netdev = k.link_by_name(i.netdev);
            // A device that is down sends nothing in the kernel either.
            if (!netdev || !netdev->up) continue;
            EgressPort port{&i, netdev, std::nullopt, std::nullopt, &uplink, 0};
            if (const auto* vlan = std::get_if<VlanEncap>(&i.encap)) {
                port.vid = vlan->vid;
                port.counter = kEgressCounterVlanBase + vlan->vid;
            } else {
                if (!underlay) underlay = &main_table.emplace(k.routes, kMainRouteTable);
                auto why = tunnel(m, k, uplink, i, *underlay, port);
                if (!why.empty()) {
                    refused_.emplace(netdev->ifindex, why);
                    continue;
                }
            }
            ports_.emplace(netdev->ifindex, port);
        }
    }

    const EgressPort* find(int ifindex) const {
        const auto it = ports_.find(ifindex);
        return it == ports_.end() ? nullptr : &it->second;
    }
    // Why `ifindex` is no egress of the fast path.
    std::string why_not(const KernelState& k, int ifindex) const {
        if (const auto it = refused_.find(ifindex); it != refused_.end()) return it->second;
        return "egress " + k.link_name(ifindex) + " is not a mapped interface that is up";
    }

private:
    // VXLAN toward the interface's remote VTEP, from the local VTEP of its fabric. The
    // kernel (or the NIC) routes the outer packet; what it cannot route it drops, so
    // the fast path sends nothing toward a VTEP without a route, and ACI's VTEPs
    // must be reached through the infra VLAN on the uplink, as the fabric expects.
    static std::string tunnel(const Mapping& m, const KernelState& k, const Link& uplink, const Interface& i,
                              const RouteLookup& underlay, EgressPort& port) {
        const Link* vx = m.vxlan ? k.link_by_name(m.vxlan->device) : nullptr;
        const bool usable = vx && vx->up && vx->kind == "vxlan" && !vx->vxlan_id &&
                            !(vx->vxlan_port && *vx->vxlan_port != m.vxlan->port);
        if (!usable)
            return "egress " + i.netdev + ": VXLAN device " + (m.vxlan ? m.vxlan->device : std::string("?")) +
                   " is not a metadata-mode VXLAN device that is up on the mapping's port";
        const Tunnel tun = *tunnel_of(i);
        const IpAddress& remote = tun.remote_vtep;
        // The kernel routes the outer packet from this source: one the host does not
        // own makes it drop the packet, which the slow path would have delivered.
        const IpAddress local = local_vtep(m, tun);
        if (std::none_of(k.addresses.begin(), k.addresses.end(),
                         [&](const Address& a) { return a.prefix.address == local; }))
            return "egress " + i.netdev + ": local VTEP " + local.str() + " is not an address of this host";
        const Route* rt = underlay.lookup(remote);
        if (!rt || rt->type != kRtnUnicast || rt->nexthops.empty())
            return "egress " + i.netdev + ": no route to remote VTEP " + remote.str();
        if (tun.aci) {
            // Every nexthop (an underlay may be ECMP) through the infra VLAN device.
            const bool infra = std::all_of(rt->nexthops.begin(), rt->nexthops.end(), [&](const Nexthop& nh) {
                const auto it = k.links.find(nh.ifindex);
                return it != k.links.end() && it->second.vlan_id == m.aci_vlan() &&
                       it->second.parent_ifindex == uplink.ifindex;
            });
            if (!infra)
                return "egress " + i.netdev + ": remote VTEP " + remote.str() + " is not reached through the ACI infra VLAN " +
                       std::to_string(m.aci_vlan()) + " on " + uplink.name;
        }
        tc::TunnelSet t;
        t.vni = tun.vni;
        t.src = local;
        t.dst = remote;
        t.dst_port = m.vxlan->port;
        // IPv4: a zero UDP checksum (RFC 7348, and what NICs encapsulate with); IPv6
        // requires one (RFC 6935 allows zero only where the receiver is told).
        t.csum = remote.family == Family::V6;
        port.tunnel = t;
        port.out = vx;
        port.counter = kEgressCounterVxlanBase + t.vni;
        return "";
    }

    std::unordered_map<int, EgressPort> ports_;
    std::unordered_map<int, std::string> refused_;
};

// Group 3 and 4 as actions: rewrite, re-tag or encapsulate, send.
std::vector<tc::Action> forwarding_tail(Family f, bool tagged, const EgressPort& port, const Mac& nexthop_mac) {
    const bool v4 = f == Family::V4;
    tc::Rewrite rw;
    rw.eth_dst = nexthop_mac;
    rw.eth_src = port.netdev->mac;
    rw.dec_ttl = v4;
    rw.dec_hoplimit = !v4;
    std::vector<tc::Action> actions;
    actions.reserve(6);
    actions.emplace_back(std::in_place_type<tc::Rewrite>, rw);
    if (v4) actions.emplace_back(std::in_place_type<tc::CsumIp4h>);  // no header checksum in IPv6
    if (tagged) actions.emplace_back(std::in_place_type<tc::VlanPop>);
    if (port.vid) actions.emplace_back(std::in_place_type<tc::VlanPush>, tc::VlanPush{*port.vid});
    if (port.tunnel) actions.emplace_back(std::in_place_type<tc::TunnelSet>, *port.tunnel);
    actions.emplace_back(std::in_place_type<tc::Redirect>, tc::Redirect{port.out->ifindex, port.out->name, port.counter});
    return actions;
}

// A rule of the process-packet chains on one ingress device.
tc::Rule chain_rule(const Ingress& in, std::uint32_t chain, std::uint16_t prio, Family f, std::string why) {
    tc::Rule r;
    r.dev = in.link->name;
    r.chain = in.base + chain;
    r.prio = prio;
    if (in.tagged) {
        r.protocol = tc::kEth8021Q;  // the tag is still on: it comes off only in a forwarding rule
        r.match.vlan_ethtype = ip_ethtype(f);
    } else {
        r.protocol = ip_ethtype(f);
    }
    r.why = std::move(why);
    return r;
}

Family rule_family(const tc::Rule& r) {
    const std::uint16_t eth = r.match.vlan_ethtype ? *r.match.vlan_ethtype : r.protocol;
    return eth == tc::kEthIpv4 ? Family::V4 : Family::V6;
}

// Builds the NAT stage's rules of one ingress device as its routing chains ask for them.
class NatStage {
public:
    NatStage(const NatState& state, std::uint16_t zone, Ingress in, Program& out)
        : state_(state), zone_(zone), in_(in), out_(out) {}

    // Outer ingress: ct nat first, then the tracked chain routes what is established.
    void outer_lookup();
    // An inner -> outer forwarding rule: becomes ct + goto the adjacency's chain.
    void toward_outside(tc::Rule r, const EgressPort& port, const Mac& nexthop);
    // Numbers the adjacency chains and fills them in.
    void finish();

private:
    struct Adjacency {
        Family family;
        std::string egress;  // interface name: numbering follows names, not addresses
        Mac source;
        Mac nexthop;
        auto operator<=>(const Adjacency&) const = default;
    };
    tc::Rule tracked(std::uint32_t chain, std::uint16_t prio, Family f, std::uint16_t state, std::string why);

    const NatState& state_;
    std::uint16_t zone_;
    Ingress in_;
    Program& out_;
    std::map<Adjacency, const EgressPort*> adjacencies_;
    std::vector<std::pair<std::size_t, Adjacency>> pending_;  // rules whose goto waits for a number
};

// The routing chain of one role on one ingress device.
class RoutingChain {
public:
    RoutingChain(const Mapping& m, const KernelState& k, Ingress in, Role role, const RouteLookup& routes,
                 const NeighbourIndex& neighbours, const EgressPorts& egress, NatStage* nat, Program& out)
        : m_(m), k_(k), in_(in), role_(role), chain_(process_chain(role)), out_(out), routes_(routes),
          neighbours_(neighbours), egress_(egress), nat_(nat) {}

    void emit() {
        ttl_expiring(Family::V4);
        ttl_expiring(Family::V6);
        to_the_host();
        if (nat_ && role_ == Role::Outer) {
            // NAT first: replies are translated back, then routed in the tracked chain;
            // what is not a reply (new, invalid) is dropped there.
            nat_->outer_lookup();
            chain_ = kChainOuterTracked;
        }
        for (const Route* r : routes_.best_routes()) route(*r);
        for (const Neighbour& n : k_.neighbours) connected_neighbour(n);
    }

private:
    tc::Rule rule(std::uint16_t prio, Family f, std::string why) const {
        return chain_rule(in_, chain_, prio, f, std::move(why));
    }

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

    // Routing, re-tag / encap and egress: groups 2 (pop), 3 and 4 of the flow chart.
    // Toward NAT, the rule only looks the connection up and continues in the
    // adjacency's chain, which carries the same tail once the connection state is known.
    void forward(tc::Rule r, const EgressPort& port, const Mac& nexthop_mac) {
        if (nat_ && through_nat(*port.iface)) return nat_->toward_outside(std::move(r), port, nexthop_mac);
        r.actions = forwarding_tail(rule_family(r), in_.tagged, port, nexthop_mac);
        out_.rules.push_back(std::move(r));
    }

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
        const EgressPort* port = egress_.find(nh.ifindex);
        if (!port) return leave(egress_.why_not(k_, nh.ifindex));
        if (auto why = refusal(*port->iface, f); !why.empty()) return leave(why);
        if (!nh.gateway) {
            // Directly connected: each resolved neighbour gets its own rule; the rest
            // of the prefix goes to the kernel, which resolves and then tells us.
            return to_kernel(std::move(r));
        }
        const Neighbour* n = resolved(nh.ifindex, *nh.gateway);
        if (!n) return leave("gateway " + nh.gateway->str() + " unresolved");
        forward(std::move(r), *port, *n->mac);
    }

    // A resolved neighbour whose longest-prefix route is the connected route on its
    // own device: forward to its MAC with a host rule.
    void connected_neighbour(const Neighbour& n) {
        if (n.state != NeighbourState::Resolved || !n.mac || never_routed(n.address)) return;
        const Route* rt = routes_.lookup(n.address);
        if (!rt || rt->type != kRtnUnicast || rt->nexthops.size() != 1) return;
        const Nexthop& nh = rt->nexthops.front();
        if (nh.gateway || nh.ifindex != n.ifindex) return;
        const EgressPort* port = egress_.find(n.ifindex);
        const Family f = n.address.family;
        if (!port || !refusal(*port->iface, f).empty()) return;
        const IpPrefix host{n.address, static_cast<std::uint8_t>(f == Family::V4 ? 32 : 128)};
        if (routes_.exact(host)) return;  // a host route of its own decides
        auto r = rule(route_prio(host), f, "neighbour " + n.address.str() + " on " + port->iface->netdev);
        r.match.dst_ip = host;
        forward(std::move(r), *port, *n.mac);
    }

    const Mapping& m_;
    const KernelState& k_;
    Ingress in_;
    Role role_;
    std::uint32_t chain_;
    Program& out_;
    const RouteLookup& routes_;
    const NeighbourIndex& neighbours_;
    const EgressPorts& egress_;
    NatStage* nat_;
};

// The outer side's lookup and the inner side's adjacency chains (docs/nat-plan.md).
void NatStage::outer_lookup() {
    for (Family f : {Family::V4, Family::V6}) {
        const bool v4 = f == Family::V4;
        auto r = chain_rule(in_, kChainOuter, v4 ? kPrioOuterCtV4 : kPrioOuterCtV6, f,
                            "nat: outer ingress, translate replies back");
        r.actions = {tc::Ct{zone_, false, v4, false, std::nullopt}, tc::Goto{in_.base + kChainOuterTracked}};
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
    tc::Rule r = chain_rule(in_, chain, prio, f, std::move(why));
    r.match.ct_state = tc::Masked<std::uint16_t>{static_cast<std::uint16_t>(tc::kCtTracked | state),
                                                 static_cast<std::uint16_t>(tc::kCtTracked | state)};
    return r;
}

void NatStage::toward_outside(tc::Rule r, const EgressPort& port, const Mac& nexthop) {
    const Family f = rule_family(r);
    Adjacency a{f, port.iface->name, port.netdev->mac, nexthop};
    adjacencies_.try_emplace(a, &port);
    // ct first in its rule (mlx5); the translation itself comes from ct, never pedit.
    r.actions = {tc::Ct{zone_, false, f == Family::V4, false, std::nullopt}, tc::Goto{0}};
    pending_.emplace_back(out_.rules.size(), a);
    out_.rules.push_back(std::move(r));
}

void NatStage::finish() {
    // Chains are numbered in a sorted order, so the same state gives the same numbers.
    std::uint32_t next = kChainNatAdjacencyBase;
    std::map<Adjacency, std::uint32_t> number;
    for (const auto& [a, _] : adjacencies_) number[a] = next++;
    for (const auto& [index, a] : pending_)
        std::get<tc::Goto>(out_.rules[index].actions[1]).chain = in_.base + number.at(a);
    for (const auto& [a, port] : adjacencies_) {
        const std::uint32_t c = number.at(a);
        const bool v4 = a.family == Family::V4;
        const auto fwd = forwarding_tail(a.family, in_.tagged, *port, a.nexthop);
        const std::uint16_t base = v4 ? 1 : 11;
        const std::string to = "nat: toward " + a.egress + " via " + mac_str(a.nexthop) + ": ";
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
        // pulls a chunk, installs the rule above and puts the packet back (into this
        // device's ingress: see the re-entry rules in compile()).
        auto first = tracked(c, static_cast<std::uint16_t>(base + 3), a.family, tc::kCtNew, to + "new, no chunk yet");
        if (state_.punt_ifindex)
            first.actions = {tc::Redirect{state_.punt_ifindex, state_.punt_dev, kPuntIndex}};
        else
            first.actions = {tc::Drop{kDropNoPunt}};
        out_.rules.push_back(std::move(first));
    }
}

}  // namespace

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

std::vector<std::string> rule_devices(const Mapping& m) {
    std::vector<std::string> devs{m.uplink};
    if (m.vxlan) devs.push_back(m.vxlan->device);
    return devs;
}

tc::Rule reinject_vlan_rule(const std::string& inject_dev, const std::string& uplink, int uplink_ifindex) {
    tc::Rule r;
    r.dev = inject_dev;
    r.chain = 0;
    r.prio = kPrioReinjectVlan;
    r.protocol = tc::kEth8021Q;
    r.actions = {tc::Redirect{uplink_ifindex, uplink, kReinjectIndex, true}};
    r.why = "re-injected first packets of VLAN interfaces -> the uplink's ingress, from chain 0";
    return r;
}

Program compile(const Mapping& m, const KernelState& k, const NatState* nat) {
    Program p;
    const Link* uplink = k.link_by_name(m.uplink);
    if (!uplink) {
        p.notes.push_back("uplink " + m.uplink + " does not exist: no rules");
        return p;
    }
    // The VXLAN device carries the EVPN and ACI interfaces' rules; without it (or
    // down) the kernel takes in no VXLAN either, and the fast path none.
    const Link* vxlan = nullptr;
    if (m.vxlan) {
        vxlan = k.link_by_name(m.vxlan->device);
        // Only a metadata-mode device takes the VNI and VTEPs from tunnel_key; a
        // per-VNI device would send everything with its own.
        std::string why = !vxlan ? " does not exist"
                          : !vxlan->up ? " is down"
                          : vxlan->kind != "vxlan" ? " is not a VXLAN device"
                          : vxlan->vxlan_id ? " is not in metadata (external) mode"
                                            : "";
        // The decap rules match the mapping's port and the encap sends to it: the
        // kernel's socket must be the one on that port, or the two paths disagree.
        if (why.empty() && vxlan->vxlan_port && *vxlan->vxlan_port != m.vxlan->port)
            why = " uses UDP port " + std::to_string(*vxlan->vxlan_port) + ", the mapping " +
                  std::to_string(m.vxlan->port);
        if (!why.empty()) {
            p.notes.push_back("VXLAN device " + m.vxlan->device + why + ": EVPN and ACI interfaces are left to the kernel");
            vxlan = nullptr;
        }
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

    // Group 2: iface = f(vlan) on the uplink, iface = f(vni) on the VXLAN device. A
    // VLAN tag stays on until a rule decides to forward; a VXLAN packet is already
    // decapsulated (by the kernel's VXLAN socket, or implicitly by the NIC).
    std::set<Role> vlan_roles, vxlan_roles;
    for (const Interface& i : m.interfaces) {
        const auto* vlan = std::get_if<VlanEncap>(&i.encap);
        if (!vlan && !vxlan) continue;  // noted above
        // The kernel takes in nothing on an interface whose device is missing or
        // down: the fast path must not carry what the slow path would not.
        const Link* netdev = k.link_by_name(i.netdev);
        if (!netdev || !netdev->up) {
            p.notes.push_back("interface " + i.name + ": netdev " + i.netdev + (netdev ? " is down" : " does not exist") +
                              ": its " + (vlan ? "VLAN" : "VNI") + " is left to the kernel");
            continue;
        }
        tc::Rule r;
        // Only frames addressed to the router are routed: flooded unknown unicast and
        // broadcast are the kernel's (it bridges, drops or answers them).
        r.match.dst_mac = netdev->mac;
        if (vlan) {
            r.dev = m.uplink;
            r.chain = kChainClassify;
            r.prio = kPrioClassify;
            r.protocol = tc::kEth8021Q;
            r.match.vlan_id = vlan->vid;
            r.actions = {tc::Goto{process_chain(i.role)}};
            r.why = "iface " + i.name + " = f(vlan " + std::to_string(vlan->vid) + ")";
            vlan_roles.insert(i.role);
        } else {
            const Tunnel tun = *tunnel_of(i);
            r.dev = vxlan->name;
            r.chain = kChainSharedIngress;
            r.prio = kPrioDecap;
            r.protocol = tc::kEthAll;
            // mlx5: the VNI, the local VTEP and an exact UDP port it knows; the remote
            // VTEP unmatched (any remote of the fabric may send).
            r.match.enc_key_id = tun.vni;
            r.match.enc_dst_ip = local_vtep(m, tun);
            r.match.enc_dst_port = m.vxlan->port;
            r.actions = {tc::Goto{kChainVxlanBase + process_chain(i.role)}};
            r.why = "iface " + i.name + " = f(vni " + std::to_string(tun.vni) + "), " + (tun.aci ? "aci" : "evpn") +
                    " decap";
            vxlan_roles.insert(i.role);
        }
        p.rules.push_back(std::move(r));
    }

    // Group 3: process packet, per ingress device and role of the ingress interface.
    const RouteLookup routes(k.routes, m.route_table);
    const NeighbourIndex neighbours(k.neighbours);
    const EgressPorts egress(m, k, *uplink, routes);
    auto process = [&](const Ingress& in, const std::set<Role>& roles) {
        std::optional<NatStage> stage;
        if (nat && m.nat) stage.emplace(*nat, m.nat->zone, in, p);
        NatStage* nat_stage = stage ? &*stage : nullptr;
        for (Role role : roles) {
            RoutingChain chain(m, k, in, role, routes, neighbours, egress, nat_stage, p);
            chain.emit();
            if (nat_stage && role == Role::Inner) nat_stage->finish();
        }
    };
    process(Ingress{uplink, true, 0}, vlan_roles);
    if (vxlan) process(Ingress{vxlan, false, kChainVxlanBase}, vxlan_roles);

    // The way back for first packets the NAT stage punted (pipeline.hpp): tagged ones
    // into the uplink's ingress, decapsulated ones into the VXLAN device's, marked.
    if (nat && m.nat && nat->punt_ifindex) {
        p.rules.push_back(reinject_vlan_rule(nat->punt_dev, uplink->name, uplink->ifindex));
        if (vxlan && vxlan_roles.count(Role::Inner)) {
            tc::TunnelSet mark;
            mark.vni = kReentryVni;
            mark.src = *IpAddress::parse("0.0.0.0");
            mark.dst = mark.src;
            mark.dst_port = kReentryPort;
            tc::Rule back;
            back.dev = nat->punt_dev;
            back.chain = 0;
            back.prio = kPrioReinjectVxlan;
            back.protocol = tc::kEthIpv4;
            back.actions = {mark, tc::Redirect{vxlan->ifindex, vxlan->name, kReinjectVxlanIndex, true}};
            back.why = "re-injected first packets of EVPN / ACI interfaces -> the VXLAN device's ingress, marked";
            p.rules.push_back(std::move(back));
            tc::Rule reentry;
            reentry.dev = vxlan->name;
            reentry.chain = kChainSharedIngress;
            reentry.prio = kPrioReentry;
            reentry.protocol = tc::kEthIpv4;
            reentry.match.enc_key_id = kReentryVni;
            reentry.match.enc_dst_port = kReentryPort;
            reentry.actions = {tc::Goto{kChainVxlanBase + kChainInner}};
            reentry.why = "a first packet back from the daemon: inner again, the NAT rule now in place";
            p.rules.push_back(std::move(reentry));
        }
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

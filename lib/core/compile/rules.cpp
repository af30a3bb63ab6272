// SPDX-License-Identifier: GPL-2.0-or-later
#include "rules.hpp"

namespace dpo::compile {

std::uint16_t route_prio(const IpPrefix& p) {
    return p.address.family == Family::V4 ? static_cast<std::uint16_t>(kPrioRouteV4Base + (32 - p.length))
                                          : static_cast<std::uint16_t>(kPrioRouteV6Base + (128 - p.length));
}

IpPrefix host_prefix(const IpAddress& a) { return IpPrefix{a, static_cast<std::uint8_t>(a.family == Family::V4 ? 32 : 128)}; }

bool never_routed(const IpAddress& a) {
    if (a.family == Family::V4) return (a.bytes[0] >= 224 && a.bytes[0] <= 239) || (a.bytes[0] == 169 && a.bytes[1] == 254);
    return a.bytes[0] == 0xff || (a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80);
}

bool is_loopback(const IpAddress& a) {
    if (a.family == Family::V4) return a.bytes[0] == 127;
    return a == *IpAddress::parse("::1");
}

std::vector<Role> roles_of(const IngressDevice& d) {
    std::vector<Role> out;
    if (d.inner) out.push_back(Role::Inner);
    if (d.outer) out.push_back(Role::Outer);
    return out;
}

tc::Rule chain_rule(const IngressDevice& in, std::uint32_t chain, std::uint16_t prio, Family f, std::string why) {
    tc::Rule r;
    r.dev = in.dev;
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

tc::Rule tracked_rule(const IngressDevice& in, std::uint32_t chain, std::uint16_t prio, Family f,
                      std::uint16_t state, std::string why) {
    tc::Rule r = chain_rule(in, chain, prio, f, std::move(why));
    const auto bits = static_cast<std::uint16_t>(tc::kCtTracked | state);
    r.match.ct_state = tc::Masked<std::uint16_t>{bits, bits};
    return r;
}

Family rule_family(const tc::Rule& r) {
    const std::uint16_t eth = r.match.vlan_ethtype ? *r.match.vlan_ethtype : r.protocol;
    return eth == tc::kEthIpv4 ? Family::V4 : Family::V6;
}

std::vector<tc::Action> forwarding_tail(Family f, bool tagged, const EgressPort& port, const Mac& nexthop_mac) {
    const bool v4 = f == Family::V4;
    tc::Rewrite rw;
    rw.eth_dst = nexthop_mac;
    rw.eth_src = port.source;
    rw.dec_ttl = v4;
    rw.dec_hoplimit = !v4;
    std::vector<tc::Action> actions;
    actions.reserve(6);
    actions.emplace_back(std::in_place_type<tc::Rewrite>, rw);
    if (v4) actions.emplace_back(std::in_place_type<tc::CsumIp4h>);  // no header checksum in IPv6
    if (tagged) actions.emplace_back(std::in_place_type<tc::VlanPop>);
    if (port.vid) actions.emplace_back(std::in_place_type<tc::VlanPush>, tc::VlanPush{*port.vid});
    if (port.tunnel) actions.emplace_back(std::in_place_type<tc::TunnelSet>, *port.tunnel);
    actions.emplace_back(std::in_place_type<tc::Redirect>, tc::Redirect{port.out_ifindex, port.out, port.counter});
    return actions;
}

tc::Ct ct_lookup(std::uint16_t zone, Family f) { return tc::Ct{zone, false, f == Family::V4, false, std::nullopt}; }

tc::Ct ct_commit(std::uint16_t zone, std::optional<tc::SnatRange> snat) {
    return tc::Ct{zone, true, false, false, std::move(snat)};
}

}  // namespace dpo::compile

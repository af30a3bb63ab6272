// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Small pieces every per-key compiler builds rules from.

#include <string>
#include <vector>

#include "core/compile/facts.hpp"
#include "core/compile/pipeline.hpp"
#include "core/mapping.hpp"
#include "core/tc/rule.hpp"

namespace dpo::compile {

inline constexpr std::uint8_t kRtnUnicast = 1;

inline std::uint32_t process_chain(Role r) { return r == Role::Inner ? kChainInner : kChainOuter; }

// Where a role's routes go on a device: the outer chain moves behind conntrack when
// the NAT stage runs.
inline std::uint32_t routing_chain(Role r, bool nat) {
    return r == Role::Outer && nat ? kChainOuterTracked : process_chain(r);
}

std::uint16_t route_prio(const IpPrefix& p);
inline std::uint16_t ip_ethtype(Family f) { return f == Family::V4 ? tc::kEthIpv4 : tc::kEthIpv6; }
IpPrefix host_prefix(const IpAddress& a);

// Never routed: link-local and multicast destinations belong to the kernel.
bool never_routed(const IpAddress& a);
// Covered by the 127.0.0.0/8 and ::1 rules already.
bool is_loopback(const IpAddress& a);

// The roles a device routes for, in order.
std::vector<Role> roles_of(const IngressDevice& d);

// A rule of the chain `chain` (before the device's base is added) of one device: tagged
// frames match the ethertype inside the tag, decapsulated ones their own.
tc::Rule chain_rule(const IngressDevice& in, std::uint32_t chain, std::uint16_t prio, Family f, std::string why);
// The same, matching a connection state (ct_state +trk plus `state`).
tc::Rule tracked_rule(const IngressDevice& in, std::uint32_t chain, std::uint16_t prio, Family f,
                      std::uint16_t state, std::string why);

Family rule_family(const tc::Rule& r);

// Group 3 and 4 as actions: rewrite, re-tag or encapsulate, send.
std::vector<tc::Action> forwarding_tail(Family f, bool tagged, const EgressPort& port, const Mac& nexthop_mac);

// ct in the NAT zone, looking the connection up (and, for IPv4, applying its
// translation); or committing a new one, translated into `snat` when given.
tc::Ct ct_lookup(std::uint16_t zone, Family f);
tc::Ct ct_commit(std::uint16_t zone, std::optional<tc::SnatRange> snat = std::nullopt);

}  // namespace dpo::compile

// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The flow chart as tc chains on the ingress of two devices: the uplink (VLAN
// interfaces, tag still on) and the metadata-mode VXLAN device (EVPN and ACI
// interfaces, already decapsulated by the kernel or, in hardware, by the NIC). Chain
// numbers are pipeline stages and strictly increase along a packet's path (mlx5
// refuses a goto to a lower chain); a miss in any chain hands the packet to the
// kernel unchanged.
//
// On the uplink:
//   chain 0      Shared ingress            802.1Q -> goto classify
//   chain 1      Lookup interface id       vlan_id N, dst_mac of iface(N)'s netdev -> goto the
//                                          routing chain of iface(N)'s role
//   chain 0x100  Process packet, inner     routing (and, later, NAT by egress role)
//   chain 0x200  Process packet, outer     (later: NAT first), routing
//
// On the VXLAN device (chains = kChainVxlanBase + the uplink's numbers):
//   chain 0          Lookup interface id   enc_key_id VNI, enc_dst_ip local VTEP,
//                                          enc_dst_port, dst_mac of iface(VNI)'s netdev
//                                          -> goto kChainVxlanBase + role chain. Decap is
//                                          implicit: no tunnel_key unset beside a goto
//                                          (mlx5: "Decap with goto isn't supported").
//   chain 0x10100    Process packet, inner (untagged: protocol ip / ipv6)
//   chain 0x10200    Process packet, outer
// mlx5 puts the rules of both devices into one eswitch table per (chain, prio): the
// distinct chain numbers keep a restore-on-miss unambiguous, and the uplink's shared
// ingress sits at prio 2, after the decap rules at prio 1, so that ACI (VLAN 2 +
// VXLAN) meets its decap rule in hardware before the catch-all for tagged frames.
//
// Group 3 (re-tag / encap) and group 4 (egress) are the tail of each routing rule:
// there is no metadata register across chains on the eswitch, so the egress
// interface is known only in the rule that chose it. Toward a VLAN interface:
// (vlan pop) + vlan push + mirred to the uplink; toward EVPN or ACI: (vlan pop) +
// tunnel_key set + mirred to the VXLAN device, which (or the NIC) adds the outer
// headers, and the infra VLAN tag for ACI from the underlay route.
//
// Inside a routing chain, prios order the checks (lower prio wins):
//   1, 2        TTL / hop limit <= 1  -> kernel (it answers ICMP time exceeded)
//   3, 4        to the host itself; multicast, broadcast, link-local, loopback -> kernel
//   5, 6        martian sources (loopback, multicast, link-local, ...) -> kernel
//   100 + (32 - len)    IPv4 routes, longest prefix first
//   200 + (128 - len)   IPv6 routes, longest prefix first
// One prio per prefix length keeps longest-prefix match exact: within one prio
// entries never overlap, and a longer prefix always has a lower prio number.

#include <cstdint>

namespace dpo::compile {

inline constexpr std::uint32_t kChainSharedIngress = 0;
inline constexpr std::uint32_t kChainClassify = 1;
inline constexpr std::uint32_t kChainInner = 0x100;
inline constexpr std::uint32_t kChainOuter = 0x200;
// With the NAT stage running (docs/nat-plan.md):
inline constexpr std::uint32_t kChainOuterTracked = 0x201;     // outer ingress after ct nat: routing
inline constexpr std::uint32_t kChainNatAdjacencyBase = 0x1000; // inner -> outer after ct, per egress adjacency
// Added to every chain on the VXLAN device (chain 0 excepted): one eswitch, one chain
// namespace, two devices.
inline constexpr std::uint32_t kChainVxlanBase = 0x10000;

inline constexpr std::uint16_t kPrioDecap = 1;     // VXLAN device chain 0: iface = f(vni)
inline constexpr std::uint16_t kPrioReentry = 2;   // VXLAN device chain 0: a first packet back from the daemon
inline constexpr std::uint16_t kPrioIngress = 2;   // after the decap rules (see above)
inline constexpr std::uint16_t kPrioClassify = 1;
inline constexpr std::uint16_t kPrioTtlV4 = 1;
inline constexpr std::uint16_t kPrioTtlV6 = 2;
inline constexpr std::uint16_t kPrioHostV4 = 3;
inline constexpr std::uint16_t kPrioHostV6 = 4;
inline constexpr std::uint16_t kPrioMartianSrcV4 = 5;
inline constexpr std::uint16_t kPrioMartianSrcV6 = 6;
inline constexpr std::uint16_t kPrioOuterCtV4 = 50;     // outer chain: ct zone Z nat, goto kChainOuterTracked
inline constexpr std::uint16_t kPrioOuterCtV6 = 51;
inline constexpr std::uint16_t kPrioRouteV4Base = 100;  // + (32 - prefix length)
inline constexpr std::uint16_t kPrioRouteV6Base = 200;  // + (128 - prefix length)

// Shared mirred action per egress VLAN interface: its statistics are the
// interface's egress counter. A high, fixed range keeps clear of other users.
inline constexpr std::uint32_t kEgressCounterVlanBase = 0xd9000000;
// The same per egress VXLAN interface: + VNI (24 bits).
inline constexpr std::uint32_t kEgressCounterVxlanBase = 0xda000000;
// The mirred action that hands first packets to the daemon (shared: it counts them).
inline constexpr std::uint32_t kPuntIndex = 0xd9200000;
// The way back (punt pair, lib/kernel/punt_port.hpp): on the punt pair's inject end,
// tagged frames go back into the uplink's ingress (from a VLAN interface), untagged
// IPv4 frames into the VXLAN device's ingress (decapsulated ones, from an EVPN or ACI
// interface), marked with a tunnel key no wire packet carries (VNI 0, UDP port 0) so
// that one rule on the VXLAN device's chain 0 takes them to the inner chain again.
inline constexpr std::uint32_t kReinjectIndex = 0xd9200001;
inline constexpr std::uint32_t kReinjectVxlanIndex = 0xd9200002;
inline constexpr std::uint16_t kPrioReinjectVlan = 1;
inline constexpr std::uint16_t kPrioReinjectVxlan = 2;
inline constexpr std::uint32_t kReentryVni = 0;
inline constexpr std::uint16_t kReentryPort = 0;
// Shared drop actions, one per reason: `tc -s actions show action gact` counts them.
inline constexpr std::uint32_t kDropOuterNew = 0xd9300001;     // outer ingress, not a reply
inline constexpr std::uint32_t kDropInvalid = 0xd9300002;      // conntrack says invalid
inline constexpr std::uint32_t kDropChunkLimit = 0xd9300003;   // subscriber out of ports
inline constexpr std::uint32_t kDropNoPunt = 0xd9300004;       // first packet, punt path down
inline constexpr std::uint32_t kDropPoolEmpty = 0xd9300005;    // no chunk left in the pool for it

}  // namespace dpo::compile

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
//   chain 0x100  Process packet, inner     routing; toward outer interfaces through NAT
//   chain 0x200  Process packet, outer     routing; with NAT, conntrack first (0x201)
//   chain 0x1000+, 0x8000, 0x8001          NAT (below)
//   chain 0x9000 + id                      one next hop: group 3 and 4 (below)
//
// On the VXLAN device (chains = kChainVxlanBase + the uplink's numbers):
//   chain 0          Lookup interface id   enc_key_id VNI, enc_dst_ip local VTEP,
//                                          enc_dst_port, dst_mac of iface(VNI)'s netdev
//                                          -> goto kChainVxlanBase + role chain. Decap is
//                                          implicit: no tunnel_key unset beside a goto
//                                          (mlx5: "Decap with goto isn't supported").
//   chain 0x10100    Process packet, inner (untagged: protocol ip / ipv6)
//   chain 0x10200    Process packet, outer, and every other chain of the uplink's,
//                    at kChainVxlanBase + its number
// mlx5 puts the rules of both devices into one eswitch table per (chain, prio): the
// distinct chain numbers keep a restore-on-miss unambiguous, and the uplink's shared
// ingress sits at prio 2, after the decap rules at prio 1, so that ACI (VLAN 2 +
// VXLAN) meets its decap rule in hardware before the catch-all for tagged frames.
//
// Group 3 (re-tag / encap) and group 4 (egress) come last: there is no metadata register
// across chains on the eswitch, so the egress is known only in the rule that chose it
// or in a chain of its own. Toward a VLAN interface: (vlan pop) + vlan push + mirred to
// the uplink; toward EVPN or ACI: (vlan pop) + tunnel_key set + mirred to the VXLAN
// device, which (or the NIC) adds the outer headers, and the infra VLAN tag for ACI from
// the underlay route.
//   - A route via a gateway jumps to its next hop's adjacency chain (0x9000 + id), which
//     holds the tail once: a neighbour's new MAC changes that one rule, not every route
//     through it. Ids are given when a next hop is first used and kept while it is used
//     (adjacency.hpp), so a new next hop changes no existing rule.
//   - A connected host (a resolved neighbour) carries the tail in its own host rule:
//     nothing else shares it, and a chain per host would be a hardware table per host.
//
// NAT, inner -> outer (docs/nat-plan.md). The translation comes from conntrack, never
// from pedit (mlx5 refuses tuple rewrites beside ct); rule count is O(subscribers +
// next hops + outer-bound routes), never a product:
//   chain 0x100          route toward an outer next hop: ct zone Z nat, goto its NAT chain
//   chain 0x1000 + id    per next hop reached through NAT, by connection state:
//                        +est / +rel -> the tail (established traffic: 4 tables in all,
//                        as without NAT); +inv -> drop; +new -> IPv4: goto 0x8000,
//                        IPv6: ct commit + the tail (not translated)
//   chain 0x8000         one rule per subscriber: +new src S -> ct commit nat into S's
//                        chunk, goto 0x8001 (or drop: its limit, or the pool is empty);
//                        +new from anyone else -> punt to the daemon (first packet)
//   chain 0x8001         the outer-bound routes again (after commit the packet is still
//                        +trk+new, and the next hop is known only from the route):
//                        goto the next hop's adjacency chain (0x9000 + id)
// Outer ingress: chain 0x200 ct zone Z nat, goto 0x201; 0x201 drops +new and +inv and
// routes the rest (replies, translated back) like 0x100.
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
inline constexpr std::uint32_t kChainOuterTracked = 0x201;      // outer ingress after ct nat: routing
inline constexpr std::uint32_t kChainNatAdjacencyBase = 0x1000; // + id: inner -> outer after ct, by connection state
inline constexpr std::uint32_t kChainSnat = 0x8000;             // new connections: commit into the subscriber's chunk
inline constexpr std::uint32_t kChainToOutside = 0x8001;        // after the commit: the outer-bound routes again
// + id: one next hop's forwarding tail (rewrite, re-tag or encap, send).
inline constexpr std::uint32_t kChainAdjacencyBase = 0x9000;
// Adjacency ids are below this: both ranges end before 0x8000 and 0x10000.
inline constexpr std::uint32_t kMaxAdjacencies = 0x7000;
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
// In an adjacency chain (the tail) and in a NAT adjacency chain (by connection state).
inline constexpr std::uint16_t kPrioAdjacency = 1;
inline constexpr std::uint16_t kPrioNatEstablished = 1;
inline constexpr std::uint16_t kPrioNatRelated = 2;
inline constexpr std::uint16_t kPrioNatInvalid = 3;
inline constexpr std::uint16_t kPrioNatNew = 4;
// In the SNAT chain: the subscribers, then first packets of anyone else.
inline constexpr std::uint16_t kPrioSubscriber = 1;
inline constexpr std::uint16_t kPrioPunt = 2;
// In the outer tracked chain, before the routes: new and invalid are dropped.
inline constexpr std::uint16_t kPrioOuterNewV4 = 7;
inline constexpr std::uint16_t kPrioOuterNewV6 = 8;
inline constexpr std::uint16_t kPrioOuterInvalidV4 = 9;
inline constexpr std::uint16_t kPrioOuterInvalidV6 = 10;
// The punt pair's other end: everything dropped (the daemon's socket has its copy).
inline constexpr std::uint16_t kPrioPuntSink = 1;

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

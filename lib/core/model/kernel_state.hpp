// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the daemon knows of the kernel's slow path: links, addresses, routes and
// neighbours, as plain values. The netlink watchers (lib/kernel) fill it; the pure
// parts read it. Nothing here knows netlink.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/ip.hpp"

namespace dpo {

struct Link {
    int ifindex = 0;
    std::string name;
    std::string kind;          // rtnl link kind: "vlan", "vxlan", "veth", "" for plain devices
    Mac mac{};
    std::uint32_t mtu = 0;
    bool up = false;           // IFF_UP
    bool running = false;      // IFF_RUNNING (carrier)
    int parent_ifindex = 0;    // IFLA_LINK: the lower device of a VLAN
    std::optional<std::uint16_t> vlan_id;
    std::optional<std::uint32_t> vxlan_id;  // absent on metadata (external) devices
    std::optional<std::uint16_t> vxlan_port;  // the UDP port a VXLAN device listens on and sends to
    bool operator==(const Link&) const = default;
};

struct Address {
    int ifindex = 0;
    IpPrefix prefix;  // the local address with its prefix length
    bool operator==(const Address&) const = default;
};

struct Nexthop {
    std::optional<IpAddress> gateway;  // absent for directly connected routes
    int ifindex = 0;
    bool operator==(const Nexthop&) const = default;
};

struct Route {
    IpPrefix destination;
    std::uint32_t table = 0;
    std::uint32_t priority = 0;
    std::uint8_t type = 0;     // RTN_UNICAST, RTN_LOCAL, ...
    std::uint8_t protocol = 0; // who wrote it: kernel, boot, static, bgp (FRR), ...
    // A route for one TOS value only applies to packets of that TOS: the fast path,
    // which does not match TOS, leaves such routes out of its lookups (model/route_table.hpp).
    std::uint8_t tos = 0;
    std::vector<Nexthop> nexthops;
    bool operator==(const Route&) const = default;
};

enum class NeighbourState : std::uint8_t { Resolved, Unresolved };

struct Neighbour {
    int ifindex = 0;
    IpAddress address;
    std::optional<Mac> mac;
    NeighbourState state = NeighbourState::Unresolved;
    std::uint16_t nud = 0;  // the kernel's NUD_* bits, for display
    bool operator==(const Neighbour&) const = default;
};

// A whole snapshot, as a dump gives it: what the model starts from and what a resync
// after an overrun compares with (model/kernel_model.hpp), and the input of the full
// compile (compile/compiler.hpp).
struct KernelState {
    std::map<int, Link> links;  // by ifindex
    std::vector<Address> addresses;
    std::vector<Route> routes;
    std::vector<Neighbour> neighbours;

    const Link* link_by_name(const std::string& name) const;
    std::string link_name(int ifindex) const;  // "#N" when unknown
};

}  // namespace dpo

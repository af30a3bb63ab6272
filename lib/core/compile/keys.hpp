// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The compiler works by source key: every rule comes from exactly one key, and a key's
// rules depend only on what the key read while it was compiled (its Inputs). The
// engine (core/engine) keeps, per input, the keys that read it, so that a change in
// the kernel or in the NAT stage recompiles exactly the keys that depend on it. The
// full compile() (compiler.hpp) compiles every key of a state: it is the oracle the
// incremental engine is tested against.
//
// Keys, in the flow chart's words:
//   Devices         group 1: the shared ingress rule on the uplink; what exists
//   Classify        group 2: iface = f(vlan) / f(vni) for one mapped interface
//   Pipeline        group 3's fixed rules of one ingress device: TTL <= 1, special
//                   destinations and martian sources to the kernel, NAT's outer lookup
//                   and its drops, the punt of first packets
//   LocalAddress    "to the host itself", one address of the host
//   Prefix          one route (the best route of one prefix of the mapping's table)
//   Host            one resolved neighbour on a connected route: its host rule
//   Adjacency       one next hop (egress interface + neighbour) that rules jump to:
//                   the rewrite / re-tag / encap tail, and the NAT state dispatch
//   Subscriber      NAT: one subscriber's commit (or drop) rule
//   Punt            NAT: the punt pair's rules and the way back in

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "core/ip.hpp"

namespace dpo::compile {

// The two devices whose clsact ingress holds the pipeline.
enum class IngressDev : std::uint8_t { Uplink = 0, Vxlan = 1 };

struct DevicesKey {
    auto operator<=>(const DevicesKey&) const = default;
};
struct ClassifyKey {
    std::uint32_t interface = 0;  // index into Mapping::interfaces
    auto operator<=>(const ClassifyKey&) const = default;
};
struct PipelineKey {
    IngressDev dev = IngressDev::Uplink;
    auto operator<=>(const PipelineKey&) const = default;
};
struct LocalAddressKey {
    IpAddress address;
    auto operator<=>(const LocalAddressKey&) const = default;
};
struct PrefixKey {
    IpPrefix prefix;  // in the mapping's route table
    auto operator<=>(const PrefixKey&) const = default;
};
struct HostKey {
    int ifindex = 0;
    IpAddress address;
    auto operator<=>(const HostKey&) const = default;
};
// A next hop as rules jump to it: traffic of `family` out of the interface whose
// netdev is `egress`, to the neighbour `nexthop` on it.
struct AdjacencyKey {
    Family family = Family::V4;
    int egress = 0;
    IpAddress nexthop;
    auto operator<=>(const AdjacencyKey&) const = default;
};
struct SubscriberKey {
    IpAddress address;
    auto operator<=>(const SubscriberKey&) const = default;
};
struct PuntKey {
    auto operator<=>(const PuntKey&) const = default;
};

using Key = std::variant<DevicesKey, ClassifyKey, PipelineKey, LocalAddressKey, PrefixKey, HostKey, AdjacencyKey,
                         SubscriberKey, PuntKey>;

struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept;
};
std::string describe(const Key& k);

// What a key read. Two more inputs are global and not recorded: the ingress devices
// and the NAT stage (running, punt device). They change rarely and touch nearly every
// key, so a change of either recompiles everything.
namespace input {
struct LinkAt {           // the link with this ifindex
    int ifindex = 0;
    auto operator<=>(const LinkAt&) const = default;
};
struct LinkNamed {        // the link with this name (a netdev name fits IFNAMSIZ, 16 bytes)
    std::array<char, 16> name{};
    static LinkNamed of(std::string_view n) {
        LinkNamed l;
        n.copy(l.name.data(), std::min(n.size(), l.name.size() - 1));
        return l;
    }
    std::string_view str() const { return std::string_view(name.data()); }
    auto operator<=>(const LinkNamed&) const = default;
};
struct Local {            // whether this address is one of the host's
    IpAddress address;
    auto operator<=>(const Local&) const = default;
};
struct Lpm {              // the longest-prefix match for this address in this table
    std::uint32_t table = 0;
    IpAddress address;
    auto operator<=>(const Lpm&) const = default;
};
struct Neighbour {        // the neighbour entry (ifindex, address), its MAC among it
    int ifindex = 0;
    IpAddress address;
    auto operator<=>(const Neighbour&) const = default;
};
struct Resolved {         // only whether that neighbour is resolved: a route through a
    int ifindex = 0;      // gateway jumps to its next hop's chain and needs no MAC
    IpAddress address;
    auto operator<=>(const Resolved&) const = default;
};
struct Egress {           // the egress facts of the netdev with this ifindex (facts.hpp)
    int ifindex = 0;
    auto operator<=>(const Egress&) const = default;
};
struct Subscriber {       // one NAT subscriber's state
    IpAddress address;
    auto operator<=>(const Subscriber&) const = default;
};
}  // namespace input

// A prefix key reads its own prefix's best route implicitly: only that key reads it.
using Input = std::variant<input::LinkAt, input::LinkNamed, input::Local, input::Lpm, input::Neighbour, input::Resolved,
                           input::Egress, input::Subscriber>;

}  // namespace dpo::compile

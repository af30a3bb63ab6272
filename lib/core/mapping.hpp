// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The interface-mapping file as plain typed structs (SPEC.md, "The interface-mapping
// file"). A Mapping that exists has passed every check of the loader: later stages
// (compiler, NAT) may rely on its invariants without checking again.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ip.hpp"

namespace dpo {

// The role of a logical interface in the flow chart's "Process packet" switch.
enum class Role : std::uint8_t { Inner, Outer };

const char* to_string(Role r);

// Group 2 of the flow chart: how the wire encapsulation selects the interface.
struct VlanEncap {          // eth / vlan N            -> iface = f(vlan)
    std::uint16_t vid = 0;
};
struct EvpnEncap {          // eth / ip / udp / vxlan  -> iface = f(vni)
    std::uint32_t vni = 0;
    IpAddress remote_vtep;
};
struct AciEncap {           // eth / vlan 2 / ip / udp / vxlan -> iface = f(vni)
    std::uint32_t vni = 0;
    IpAddress remote_vtep;
};
using Encapsulation = std::variant<VlanEncap, EvpnEncap, AciEncap>;

const char* encapsulation_name(const Encapsulation& e);

struct Interface {
    std::string name;    // the operator's name for the logical interface
    std::string netdev;  // the kernel device of the slow path
    Role role = Role::Inner;
    Encapsulation encap;
};

struct VxlanDevice {
    std::string device;
    std::uint16_t port = 4789;
};

struct AciFabric {
    std::uint16_t vlan = 2;  // the infra VLAN that carries ACI's VXLAN
    IpAddress local_vtep;
};

struct EvpnFabric {
    IpAddress local_vtep;
};

struct PortRange {
    std::uint16_t first = 1024;
    std::uint16_t last = 65535;
    std::uint32_t size() const { return std::uint32_t{last} - first + 1; }
    bool operator==(const PortRange&) const = default;
};

// An IPFIX collector of NAT events: "192.0.2.10:4739" or "[2001:db8::10]:4739".
struct Collector {
    IpAddress address;
    std::uint16_t port = 0;
    static std::optional<Collector> parse(std::string_view text);
    std::string str() const;
    auto operator<=>(const Collector&) const = default;
};

inline constexpr std::size_t kMaxCollectors = 8;

// RFC 8158 port-block events over IPFIX (docs/nat-logging.md), besides the journal.
struct NatLogging {
    std::vector<Collector> collectors;  // 1..8, unique
    std::uint32_t template_refresh_seconds = 60;
    std::uint32_t observation_domain_id = 1;
    bool operator==(const NatLogging&) const = default;
};

struct Nat {
    std::uint16_t zone = 0;
    std::vector<IpPrefix> pool;  // IPv4, canonical, disjoint
    PortRange ports;
    std::uint32_t chunk_size = 512;
    std::uint32_t max_chunks_per_subscriber = 4;
    std::uint32_t chunk_idle_seconds = 120;
    // First packets punted to the daemon, at most, per second and ingress device (the
    // punt rule's police action drops the rest, counted): a flood of new connections
    // from many sources, or a scan from inside, costs the daemon a bounded rate.
    std::uint32_t first_packet_rate = 1000;
    std::optional<NatLogging> logging;

    // Whole chunks that fit in the port range of one public address.
    std::uint32_t chunks_per_address() const { return ports.size() / chunk_size; }
    bool operator==(const Nat&) const = default;
};

// Whether a new `nat` section needs the NAT stage started again: any change but to
// `logging`, which the exporter takes on while the stage runs (a restart would forget
// the idle chunks that conntrack does not show, and their releases with them).
bool same_nat_stage(const std::optional<Nat>& a, const std::optional<Nat>& b);

inline constexpr std::uint16_t kDefaultAciVlan = 2;
inline constexpr std::uint32_t kMainRouteTable = 254;

struct Mapping {
    std::string uplink;
    std::optional<VxlanDevice> vxlan;
    std::optional<AciFabric> aci;
    std::optional<EvpnFabric> evpn;
    std::vector<Interface> interfaces;
    std::optional<Nat> nat;
    std::uint32_t route_table = kMainRouteTable;

    // The ACI infra VLAN is reserved even when no ACI section is given.
    std::uint16_t aci_vlan() const { return aci ? aci->vlan : kDefaultAciVlan; }
    const Interface* find_by_netdev(const std::string& netdev) const;
};

}  // namespace dpo

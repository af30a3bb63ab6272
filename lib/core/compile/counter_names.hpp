// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Names for the shared tc actions whose statistics are the dataplane's counters
// (pipeline.hpp): a mirred per egress interface (the flow chart's "count") and a gact
// drop per reason. The kernel knows them only by index (`tc -s actions show action
// gact` prints 0xd9300002); an operator, `dpoffloadctl counters` and the metrics
// exporter want "invalid" and "wan0 (vlan 100 on ens1f0)". Pure: the mapping says which
// interface an index stands for; the index alone says its kind.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/mapping.hpp"

namespace dpo::compile {

enum class CounterKind : std::uint8_t { Egress, Drop };
const char* to_string(CounterKind k);  // "egress", "drop"

struct CounterName {
    CounterKind kind = CounterKind::Drop;
    // Drop: the reason ("outer-new", "invalid", "chunk-limit", "no-punt", "pool-empty").
    // Egress: the mapping's interface name (names joined by "," when a VID or VNI is
    // shared); "vlan-N" or "vni-N" for an index no interface of the mapping has (a rule
    // a previous mapping left); "nat-punt", "nat-reinject", "nat-reinject-vxlan" for the
    // first-packet path's own redirects.
    std::string name;
    std::uint32_t index = 0;
    std::string device;   // egress: the device the packet leaves by (the uplink, the VXLAN device)
    std::string detail;   // egress: "vlan 100", "evpn vni 5000", "aci vni 6000"; drop: what it drops
    bool operator==(const CounterName&) const = default;
};

// What the index stands for under this mapping; nothing for an index of none of
// the counter ranges (a per-rule action the kernel numbered).
std::optional<CounterName> counter_name(const Mapping& m, std::uint32_t index);

// Every counter this mapping can have, by index: the drop reasons and the first-packet
// redirects always, one egress per mapped VLAN or VNI. The kernel has an action only
// while a rule holds it.
std::vector<CounterName> counter_names(const Mapping& m);

}  // namespace dpo::compile

// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The egress facts: what the pipeline's rules are built around, derived once from the
// mapping and the kernel model, small (one entry per mapped interface) and read by
// nearly every key.
//   - The ingress devices: the uplink (VLAN interfaces, tag still on) and the VXLAN
//     device (EVPN and ACI interfaces, decapsulated), each with the routing chains of
//     the roles its interfaces have in the mapping.
//   - Per mapped interface whose netdev is up, how a packet leaves through it (group 3
//     and 4 of the flow chart), or why it cannot.
// The engine recomputes them when one of their inputs changes and recompiles the keys
// that read a fact that changed.

#include <array>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/compile/keys.hpp"
#include "core/mapping.hpp"
#include "core/model/kernel_model.hpp"
#include "core/tc/rule.hpp"

namespace dpo::compile {

struct IngressDevice {
    IngressDev which = IngressDev::Uplink;
    std::string dev;
    int ifindex = 0;
    bool tagged = true;      // frames still carry their VLAN tag (the uplink)
    std::uint32_t base = 0;  // added to the chain numbers of pipeline.hpp (chain 0 excepted)
    bool inner = false;      // routing chains of each role (from the mapping's interfaces)
    bool outer = false;
    bool operator==(const IngressDevice&) const = default;
    bool routes() const { return inner || outer; }
};

// Group 3 and 4 for one interface: how a packet leaves through it.
struct EgressPort {
    std::uint32_t interface = 0;          // index into Mapping::interfaces
    std::string name;                     // the interface's name
    Role role = Role::Inner;
    std::string netdev;                   // the slow path's device: source MAC, neighbours
    Mac source{};                         // its MAC
    std::optional<std::uint16_t> vid;     // push vlan
    std::optional<tc::TunnelSet> tunnel;  // encapsulate (EVPN, ACI)
    std::string out;                      // the uplink or the VXLAN device
    int out_ifindex = 0;
    std::uint32_t counter = 0;            // the shared mirred's index: the egress counter
    bool operator==(const EgressPort&) const = default;
};

struct Facts {
    std::array<std::optional<IngressDevice>, 2> ingress;  // by IngressDev
    std::unordered_map<int, EgressPort> egress;           // by netdev ifindex
    std::unordered_map<int, std::string> refused;         // netdev ifindex -> why it is no egress
    std::vector<std::string> notes;                       // about the devices

    const IngressDevice* device(IngressDev d) const {
        const auto& i = ingress[static_cast<std::size_t>(d)];
        return i ? &*i : nullptr;
    }
    bool operator==(const Facts&) const = default;
};

// `reads`, when given, receives every input the facts were computed from.
Facts compute_facts(const Mapping& m, const model::KernelModel& k, std::vector<Input>* reads = nullptr);

}  // namespace dpo::compile

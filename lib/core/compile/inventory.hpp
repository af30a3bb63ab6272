// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// A person-readable account of the mapping and of how the kernel's slow path
// matches it: what `dpoffloadd --show` prints, and what the demo shows a newcomer.

#include <string>
#include <vector>

#include "core/model/kernel_state.hpp"
#include "core/mapping.hpp"

namespace dpo {

std::vector<std::string> describe_mapping(const Mapping& m);

struct Finding {
    bool ok;              // false: the kernel does not match what the mapping expects
    std::string text;
};

// For each interface: is its netdev there, up, of the expected VLAN on the uplink,
// and what addresses, routes (of the mapping's table) and neighbours lie on it.
std::vector<Finding> inspect_kernel(const Mapping& m, const KernelState& k);

}  // namespace dpo

// SPDX-License-Identifier: GPL-2.0-or-later
#include "kernel_state.hpp"

#include <cstdio>

#include "core/gcc_workarounds.hpp"

namespace dpo {

const Link* KernelState::link_by_name(const std::string& name) const {
    for (const auto& [_, l] : links)
        if (l.name == name) return &l;
    return nullptr;
}

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::string KernelState::link_name(int ifindex) const {
    const auto it = links.find(ifindex);
    return it != links.end() ? it->second.name : "#" + std::to_string(ifindex);
}
DPO_GCC_WARNING_ON

}  // namespace dpo

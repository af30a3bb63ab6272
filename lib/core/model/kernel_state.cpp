// SPDX-License-Identifier: GPL-2.0-or-later
#include "kernel_state.hpp"

#include <cstdio>

namespace dpo {

const Link* KernelState::link_by_name(const std::string& name) const {
    for (const auto& [_, l] : links)
        if (l.name == name) return &l;
    return nullptr;
}

std::string KernelState::link_name(int ifindex) const {
    const auto it = links.find(ifindex);
    return it != links.end() ? it->second.name : "#" + std::to_string(ifindex);
}

}  // namespace dpo

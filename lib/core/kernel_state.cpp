// SPDX-License-Identifier: GPL-2.0-or-later
#include "kernel_state.hpp"

#include <cstdio>

namespace dpo {

std::string mac_str(const Mac& m) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return buf;
}

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

// SPDX-License-Identifier: GPL-2.0-or-later
#include "mapping.hpp"

namespace dpo {

const char* to_string(Role r) { return r == Role::Inner ? "inner" : "outer"; }

const char* encapsulation_name(const Encapsulation& e) {
    switch (e.index()) {
        case 0: return "vlan";
        case 1: return "evpn";
        default: return "aci";
    }
}

const Interface* Mapping::find_by_netdev(const std::string& netdev) const {
    for (const auto& i : interfaces)
        if (i.netdev == netdev) return &i;
    return nullptr;
}

}  // namespace dpo

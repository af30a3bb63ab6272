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

// "a.b.c.d:port" or "[v6]:port", port 1..65535: the forms that cannot be misread.
std::optional<Collector> Collector::parse(std::string_view text) {
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    auto address = IpAddress::parse(host);
    if (!address) return std::nullopt;
    // A bracket says IPv6, its absence IPv4: "1::2:80" would be ambiguous.
    if ((text.front() == '[') != (address->family == Family::V6)) return std::nullopt;
    if (port.empty() || port.size() > 5) return std::nullopt;
    std::uint32_t p = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return std::nullopt;
        p = p * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (p < 1 || p > 65535) return std::nullopt;
    return Collector{*address, static_cast<std::uint16_t>(p)};
}

std::string Collector::str() const {
    return (address.family == Family::V6 ? "[" + address.str() + "]" : address.str()) + ":" + std::to_string(port);
}

bool same_nat_stage(const std::optional<Nat>& a, const std::optional<Nat>& b) {
    if (!a || !b) return !a && !b;
    Nat x = *a, y = *b;
    x.logging.reset();
    y.logging.reset();
    return x == y;
}

}  // namespace dpo

// SPDX-License-Identifier: GPL-2.0-or-later
#include "route_lookup.hpp"

#include <cstring>
#include <string_view>

namespace dpo::compile {

namespace {
std::array<std::uint8_t, 16> masked(const IpAddress& a, unsigned len) {
    std::array<std::uint8_t, 16> out{};
    const unsigned whole = len / 8;
    std::memcpy(out.data(), a.bytes.data(), whole);
    if (len % 8) out[whole] = static_cast<std::uint8_t>(a.bytes[whole] & (0xff << (8 - len % 8)));
    return out;
}
std::size_t family_slot(Family f) { return f == Family::V4 ? 0 : 1; }
}  // namespace

std::size_t RouteLookup::BytesHash::operator()(const std::array<std::uint8_t, 16>& b) const noexcept {
    return std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

RouteLookup::RouteLookup(const std::vector<Route>& routes, std::uint32_t table) {
    for (const Route& r : routes) {
        if (r.table != table) continue;
        auto& slot = by_length_[family_slot(r.destination.address.family)][r.destination.length];
        auto [it, fresh] = slot.emplace(masked(r.destination.address, r.destination.length), &r);
        if (!fresh && r.priority < it->second->priority) it->second = &r;
    }
    for (const auto& family : by_length_)
        for (const auto& [_, slot] : family)
            for (const auto& [__, r] : slot) best_.push_back(r);
}

const Route* RouteLookup::lookup(const IpAddress& a) const {
    for (const auto& [len, slot] : by_length_[family_slot(a.family)]) {
        const auto it = slot.find(masked(a, len));
        if (it != slot.end()) return it->second;
    }
    return nullptr;
}

const Route* RouteLookup::exact(const IpPrefix& p) const {
    const auto& family = by_length_[family_slot(p.address.family)];
    const auto slot = family.find(p.length);
    if (slot == family.end()) return nullptr;
    const auto it = slot->second.find(masked(p.address, p.length));
    return it == slot->second.end() ? nullptr : it->second;
}

}  // namespace dpo::compile

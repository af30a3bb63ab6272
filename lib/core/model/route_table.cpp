// SPDX-License-Identifier: GPL-2.0-or-later
#include "route_table.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace dpo::model {

namespace {
std::size_t family_slot(Family f) { return f == Family::V4 ? 0 : 1; }
}  // namespace

std::array<std::uint8_t, 16> masked_bytes(const IpAddress& a, unsigned length) {
    std::array<std::uint8_t, 16> out{};
    const unsigned whole = length / 8;
    std::memcpy(out.data(), a.bytes.data(), whole);
    if (length % 8) out[whole] = static_cast<std::uint8_t>(a.bytes[whole] & (0xff << (8 - length % 8)));
    return out;
}

std::size_t RouteTable::BytesHash::operator()(const Bytes& b) const noexcept {
    return std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

const Route* RouteTable::chosen(const Slot& s) {
    const Route* best = nullptr;
    for (const Route& r : s.routes)
        if (r.tos == 0 && (!best || r.priority < best->priority)) best = &r;
    return best;
}

std::optional<Route> RouteTable::chosen_copy(const Slot& s) {
    if (const Route* r = chosen(s)) return *r;
    return std::nullopt;
}

RouteTable::Slots& RouteTable::slots_of(const IpPrefix& p) {
    return by_length_[family_slot(p.address.family)][p.length];
}

const RouteTable::Slots* RouteTable::find_slots(const IpPrefix& p) const {
    const auto& family = by_length_[family_slot(p.address.family)];
    const auto it = family.find(p.length);
    return it == family.end() ? nullptr : &it->second;
}

RouteTable::Change RouteTable::upsert(const Route& r) {
    const IpPrefix& p = r.destination;
    Slot& slot = slots_of(p)[masked_bytes(p.address, p.length)];
    Change c{p, chosen_copy(slot), std::nullopt};
    const RouteId id = RouteId::of(r);
    const auto it = std::find_if(slot.routes.begin(), slot.routes.end(),
                                 [&](const Route& x) { return RouteId::of(x) == id; });
    if (it != slot.routes.end()) {
        *it = r;
    } else {
        slot.routes.push_back(r);
        ++size_;
    }
    c.after = chosen_copy(slot);
    return c;
}

RouteTable::Change RouteTable::remove(const RouteId& id) {
    const IpPrefix& p = id.destination;
    Change c{p, std::nullopt, std::nullopt};
    auto& family = by_length_[family_slot(p.address.family)];
    const auto by_len = family.find(p.length);
    if (by_len == family.end()) return c;
    const auto it = by_len->second.find(masked_bytes(p.address, p.length));
    if (it == by_len->second.end()) return c;
    Slot& slot = it->second;
    c.before = chosen_copy(slot);
    const auto r = std::find_if(slot.routes.begin(), slot.routes.end(),
                                [&](const Route& x) { return RouteId::of(x) == id; });
    if (r == slot.routes.end()) {
        c.after = c.before;
        return c;
    }
    slot.routes.erase(r);
    --size_;
    c.after = chosen_copy(slot);
    // Nothing is kept for a prefix without routes, nor for a length without prefixes.
    if (slot.routes.empty()) {
        by_len->second.erase(it);
        if (by_len->second.empty()) family.erase(by_len);
    }
    return c;
}

const Route* RouteTable::best(const IpPrefix& p) const {
    const Slots* slots = find_slots(p);
    if (!slots) return nullptr;
    const auto it = slots->find(masked_bytes(p.address, p.length));
    return it == slots->end() ? nullptr : chosen(it->second);
}

const Route* RouteTable::lookup(const IpAddress& a) const {
    for (const auto& [length, slots] : by_length_[family_slot(a.family)]) {
        const auto it = slots.find(masked_bytes(a, length));
        if (it == slots.end()) continue;
        // A prefix whose routes are all for one TOS is no route for the fast path:
        // a shorter prefix decides, as it would for a packet of another TOS.
        if (const Route* r = chosen(it->second)) return r;
    }
    return nullptr;
}

}  // namespace dpo::model

// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// One routing table, changed in place one route at a time, with the kernel's two
// choices: among the routes to one prefix the lowest metric wins (the prefix's "best"
// route), and a destination takes the longest prefix that contains it.
//
// Routes are kept per family and prefix length in hash maps, so a change costs O(1)
// and a longest-prefix match at most one probe per prefix length present (33 for
// IPv4, 129 for IPv6), whatever the table's size. A route for one TOS value applies
// only to packets of that TOS; the fast path does not match TOS, so such routes are
// kept (the kernel has them) but never chosen.

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/model/kernel_state.hpp"

namespace dpo::model {

// What identifies a route in the kernel (and in libnl's cache): within one table, its
// destination, TOS and metric.
struct RouteId {
    IpPrefix destination;
    std::uint8_t tos = 0;
    std::uint32_t priority = 0;
    auto operator<=>(const RouteId&) const = default;
    static RouteId of(const Route& r) { return {r.destination, r.tos, r.priority}; }
};

class RouteTable {
public:
    // The prefix's best route before and after a change; equal when the change did not
    // move the kernel's choice (another metric of the same prefix).
    struct Change {
        IpPrefix prefix;
        std::optional<Route> before, after;
        bool best_changed() const { return before != after; }
    };

    // Adds the route, or replaces the one with its identity.
    Change upsert(const Route& r);
    // Removes the route with this identity; a route that is not there changes nothing.
    Change remove(const RouteId& id);

    // The kernel's choice for exactly this prefix, if it has one.
    const Route* best(const IpPrefix& p) const;
    // The best route of the longest prefix containing `a`.
    const Route* lookup(const IpAddress& a) const;
    // Every route, of every metric.
    std::size_t size() const { return size_; }
    template <class Fn>
    void for_each(Fn fn) const {
        for (const auto& family : by_length_)
            for (const auto& [_, slots] : family)
                for (const auto& [__, slot] : slots)
                    for (const Route& r : slot.routes) fn(r);
    }
    // Each prefix's best route.
    template <class Fn>
    void for_each_best(Fn fn) const {
        for (const auto& family : by_length_)
            for (const auto& [_, slots] : family)
                for (const auto& [__, slot] : slots)
                    if (const Route* r = chosen(slot)) fn(*r);
    }

private:
    using Bytes = std::array<std::uint8_t, 16>;
    struct BytesHash {
        std::size_t operator()(const Bytes& b) const noexcept;
    };
    // The routes of one prefix, every metric and TOS.
    struct Slot {
        std::vector<Route> routes;
    };
    using Slots = std::unordered_map<Bytes, Slot, BytesHash>;

    static const Route* chosen(const Slot& s);
    static std::optional<Route> chosen_copy(const Slot& s);
    Slots& slots_of(const IpPrefix& p);
    const Slots* find_slots(const IpPrefix& p) const;

    // [0] IPv4, [1] IPv6; per prefix length, longest first.
    std::array<std::map<std::uint8_t, Slots, std::greater<>>, 2> by_length_;
    std::size_t size_ = 0;
};

// The prefix's address with every bit beyond its length cleared: the key of a prefix.
std::array<std::uint8_t, 16> masked_bytes(const IpAddress& a, unsigned length);

}  // namespace dpo::model

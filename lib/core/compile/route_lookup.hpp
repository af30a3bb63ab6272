// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Longest-prefix match over one routing table, as the kernel does it: the longest
// prefix containing the address wins, and among routes to the same prefix the
// lowest metric. One hash map per prefix length, so a lookup costs at most 33
// (IPv4) or 129 (IPv6) probes whatever the table size.

#include <array>
#include <cstdint>
#include <map>
#include <unordered_map>
#include <vector>

#include "core/model/kernel_state.hpp"

namespace dpo::compile {

class RouteLookup {
public:
    // Keeps pointers into `routes`: it must outlive the lookup.
    RouteLookup(const std::vector<Route>& routes, std::uint32_t table);

    const Route* lookup(const IpAddress& a) const;
    // The route the kernel uses for exactly this prefix (lowest metric), if any.
    const Route* exact(const IpPrefix& p) const;
    // Routes of the table, one per prefix (the lowest metric).
    const std::vector<const Route*>& best_routes() const { return best_; }

private:
    struct BytesHash {
        std::size_t operator()(const std::array<std::uint8_t, 16>& b) const noexcept;
    };
    using ByAddress = std::unordered_map<std::array<std::uint8_t, 16>, const Route*, BytesHash>;
    // Per family (0: v4, 1: v6), per prefix length, longest first.
    std::array<std::map<std::uint8_t, ByAddress, std::greater<>>, 2> by_length_;
    std::vector<const Route*> best_;
};

}  // namespace dpo::compile

// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Adjacency ids: each next hop that rules jump to (AdjacencyKey) has its own chains,
// numbered from a small id (pipeline.hpp: kChainAdjacencyBase + id, and
// kChainNatAdjacencyBase + id through NAT). An id is given when a next hop is first
// used and kept while anything uses it, so a new next hop changes no existing rule and
// a neighbour's new MAC changes only its own chain.
//
// Ids are history, not a function of the state: the compiler takes the table as an
// input (the engine owns it), and a restarted daemon takes its predecessor's ids back
// from the installed chains. A chain found at start is reserved under its signature
// (what its forwarding rule does), and the first next hop with that signature takes it:
// two next hops with one signature have identical chains, so either may take either.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "core/compile/keys.hpp"
#include "core/ip.hpp"

namespace dpo::compile {

// What an adjacency chain's forwarding rule does, whatever its id.
struct AdjacencySignature {
    Family family = Family::V4;
    std::uint32_t counter = 0;  // the egress counter (shared mirred) index
    Mac nexthop{};
    Mac source{};
    auto operator<=>(const AdjacencySignature&) const = default;
};

class Adjacencies {
public:
    explicit Adjacencies(std::uint32_t capacity);

    std::optional<std::uint32_t> id(const AdjacencyKey& a) const;
    // The adjacency's id; a new adjacency takes a reserved id of its signature, else
    // the lowest free one. Nothing when every id is in use.
    std::optional<std::uint32_t> acquire(const AdjacencyKey& a, const AdjacencySignature& s);
    void release(const AdjacencyKey& a);

    // An id a previous run used, for its chain found installed with this signature.
    void reserve(std::uint32_t id, const AdjacencySignature& s);
    // The reservations nobody claimed become free (their chains are stale).
    void drop_reservations();

    std::size_t size() const { return ids_.size(); }
    const std::map<AdjacencyKey, std::uint32_t>& all() const { return ids_; }
    bool operator==(const Adjacencies& o) const { return ids_ == o.ids_; }

private:
    std::uint32_t capacity_;
    std::map<AdjacencyKey, std::uint32_t> ids_;
    std::set<std::uint32_t> used_;
    std::multimap<AdjacencySignature, std::uint32_t> reserved_;
    std::set<std::uint32_t> reserved_ids_;
};

}  // namespace dpo::compile

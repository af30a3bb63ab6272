// SPDX-License-Identifier: GPL-2.0-or-later
#include "adjacency.hpp"

namespace dpo::compile {

Adjacencies::Adjacencies(std::uint32_t capacity) : capacity_(capacity) {}

std::optional<std::uint32_t> Adjacencies::id(const AdjacencyKey& a) const {
    const auto it = ids_.find(a);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
}

std::optional<std::uint32_t> Adjacencies::acquire(const AdjacencyKey& a, const AdjacencySignature& s) {
    if (auto known = id(a)) return known;
    if (const auto r = reserved_.find(s); r != reserved_.end()) {
        const std::uint32_t claimed = r->second;
        reserved_.erase(r);
        reserved_ids_.erase(claimed);
        used_.insert(claimed);
        ids_.emplace(a, claimed);
        return claimed;
    }
    // The lowest id neither used nor reserved: ids stay small and chains dense. Used
    // and reserved ids are few (next hops, not routes), so the walk is short.
    std::uint32_t candidate = 0;
    while (used_.count(candidate) || reserved_ids_.count(candidate)) ++candidate;
    if (candidate >= capacity_) return std::nullopt;
    used_.insert(candidate);
    ids_.emplace(a, candidate);
    return candidate;
}

void Adjacencies::release(const AdjacencyKey& a) {
    const auto it = ids_.find(a);
    if (it == ids_.end()) return;
    used_.erase(it->second);
    ids_.erase(it);
}

void Adjacencies::reserve(std::uint32_t id, const AdjacencySignature& s) {
    if (id >= capacity_ || used_.count(id) || reserved_ids_.count(id)) return;
    reserved_.emplace(s, id);
    reserved_ids_.insert(id);
}

void Adjacencies::drop_reservations() {
    reserved_.clear();
    reserved_ids_.clear();
}

}  // namespace dpo::compile

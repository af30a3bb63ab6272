// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The reverse index of the engine: for each input (keys.hpp), the keys that read it
// when they were last compiled. A change in the kernel model or the NAT stage names
// inputs; the index names the keys to recompile. Longest-prefix matches are kept in
// address order, so that a route change finds the addresses it may now match, or no
// longer, with one range walk.

#include <cstdint>
#include <map>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/compile/keys.hpp"

namespace dpo::engine {

using KeyId = std::uint32_t;

class Watchers {
public:
    void add(const compile::Input& in, KeyId k);
    void remove(const compile::Input& in, KeyId k);

    // Calls fn(KeyId) for each key that read `in`.
    template <class Fn>
    void for_each(const compile::Input& in, Fn fn) const {
        if (const auto* lpm = std::get_if<compile::input::Lpm>(&in)) {
            const auto it = lpm_.find({lpm->table, lpm->address});
            if (it != lpm_.end())
                for (KeyId k : it->second) fn(k);
            return;
        }
        const auto it = plain_.find(in);
        if (it != plain_.end())
            for (KeyId k : it->second) fn(k);
    }
    // Calls fn(KeyId) for each key that looked up an address inside `p` in `table`.
    template <class Fn>
    void for_each_lpm_within(std::uint32_t table, const IpPrefix& p, Fn fn) const {
        const IpAddress first = first_of(p), last = last_of(p);
        for (auto it = lpm_.lower_bound({table, first}); it != lpm_.end() && it->first <= std::make_pair(table, last);
             ++it)
            for (KeyId k : it->second) fn(k);
    }

    std::size_t edges() const { return edges_; }

private:
    struct InputHash {
        std::size_t operator()(const compile::Input& in) const noexcept;
    };
    static IpAddress first_of(const IpPrefix& p);
    static IpAddress last_of(const IpPrefix& p);

    std::unordered_map<compile::Input, std::unordered_set<KeyId>, InputHash> plain_;
    std::map<std::pair<std::uint32_t, IpAddress>, std::unordered_set<KeyId>> lpm_;
    std::size_t edges_ = 0;
};

}  // namespace dpo::engine

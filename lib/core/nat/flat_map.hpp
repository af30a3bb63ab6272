// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// An open-addressing hash map from 32-bit keys to small values: one array of
// (key, value) slots, linear probing, backward-shift deletion. It exists because a
// carrier-grade NAT holds one entry per subscriber and per chunk: std::unordered_map
// spends ~50 bytes of node and bucket overhead on each, this spends none.
// Key 0xffffffff marks an empty slot and cannot be stored.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dpo::nat {

template <class V>
class FlatMap {
public:
    static constexpr std::uint32_t kEmpty = 0xffffffffu;

    V* find(std::uint32_t key) {
        if (slots_.empty()) return nullptr;
        for (std::size_t i = home(key);; i = next(i)) {
            if (slots_[i].key == key) return &slots_[i].value;
            if (slots_[i].key == kEmpty) return nullptr;
        }
    }
    const V* find(std::uint32_t key) const { return const_cast<FlatMap*>(this)->find(key); }

    // For keys that must be there: a missing one is a bug, not an expected failure.
    V& at(std::uint32_t key) {
        V* v = find(key);
        if (!v) throw std::logic_error("FlatMap::at: missing key " + std::to_string(key));
        return *v;
    }
    const V& at(std::uint32_t key) const { return const_cast<FlatMap*>(this)->at(key); }

    // Inserts `value` unless `key` is there; returns the stored value and whether it is new.
    std::pair<V*, bool> try_emplace(std::uint32_t key, const V& value) {
        if ((size_ + 1) * 5 > slots_.size() * 4) grow();  // load at most 0.8
        for (std::size_t i = home(key);; i = next(i)) {
            if (slots_[i].key == key) return {&slots_[i].value, false};
            if (slots_[i].key == kEmpty) {
                slots_[i] = {key, value};
                ++size_;
                return {&slots_[i].value, true};
            }
        }
    }

    bool erase(std::uint32_t key) {
        if (slots_.empty()) return false;
        std::size_t i = home(key);
        while (slots_[i].key != key) {
            if (slots_[i].key == kEmpty) return false;
            i = next(i);
        }
        // Shift later members of the probe run back, so no tombstones are needed.
        for (std::size_t j = next(i);; j = next(j)) {
            if (slots_[j].key == kEmpty) break;
            const std::size_t h = home(slots_[j].key);
            // Move j into the hole i unless its home lies cyclically in (i, j].
            const bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
            if (!stays) {
                slots_[i] = slots_[j];
                i = j;
            }
        }
        slots_[i].key = kEmpty;
        --size_;
        return true;
    }

    template <class Fn>
    void for_each(Fn fn) const {
        for (const auto& s : slots_)
            if (s.key != kEmpty) fn(s.key, s.value);
    }

    std::size_t size() const { return size_; }
    std::size_t bytes() const { return slots_.capacity() * sizeof(Slot); }

private:
    struct Slot {
        std::uint32_t key = kEmpty;
        V value{};
    };

    std::size_t home(std::uint32_t key) const {
        // Fibonacci hashing spreads consecutive keys (addresses, chunk ids).
        return static_cast<std::size_t>((key * 0x9e3779b97f4a7c15ULL) >> shift_);
    }
    std::size_t next(std::size_t i) const { return (i + 1) & (slots_.size() - 1); }

    void grow() {
        std::vector<Slot> old;
        old.swap(slots_);
        const std::size_t capacity = old.empty() ? 16 : old.size() * 2;
        slots_.assign(capacity, Slot{});
        shift_ = 64;
        for (std::size_t c = capacity; c > 1; c >>= 1) --shift_;
        size_ = 0;
        for (const auto& s : old)
            if (s.key != kEmpty) try_emplace(s.key, s.value);
    }

    std::vector<Slot> slots_;
    std::size_t size_ = 0;
    unsigned shift_ = 64;
};

}  // namespace dpo::nat

// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include <random>
#include <unordered_map>

#include "core/nat/flat_map.hpp"

TEST_CASE("FlatMap agrees with std::unordered_map through inserts and erases that collide") {
    dpo::nat::FlatMap<std::uint32_t> flat;
    std::unordered_map<std::uint32_t, std::uint32_t> ref;
    std::mt19937 rng(42);
    // Keys from a small range make probe runs long and erases shift them.
    std::uniform_int_distribution<std::uint32_t> key(0, 3000);
    for (int step = 0; step < 200000; ++step) {
        const std::uint32_t k = key(rng);
        if (rng() % 3 == 0) {
            CHECK(flat.erase(k) == (ref.erase(k) == 1));
        } else {
            auto [v, fresh] = flat.try_emplace(k, k * 7);
            CHECK(fresh == ref.emplace(k, k * 7).second);
            CHECK(*v == k * 7);
        }
        if (step % 10000 == 0) {
            REQUIRE(flat.size() == ref.size());
            for (std::uint32_t q = 0; q <= 3000; ++q) {
                const auto* f = flat.find(q);
                const auto it = ref.find(q);
                REQUIRE((f != nullptr) == (it != ref.end()));
                if (f) REQUIRE(*f == it->second);
            }
        }
    }
    std::size_t seen = 0;
    flat.for_each([&](std::uint32_t k, std::uint32_t v) {
        ++seen;
        CHECK(ref.at(k) == v);
    });
    CHECK(seen == ref.size());
    CHECK_THROWS_AS(flat.at(999999), std::logic_error);
}

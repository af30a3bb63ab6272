// SPDX-License-Identifier: GPL-2.0-or-later
// Port chunks, as SPEC.md's "NAT: port chunks" states them.
#include <catch2/catch.hpp>

#include <set>

#include "core/mapping_loader.hpp"
#include "core/nat/chunks.hpp"

using namespace dpo;
using nat::ChunkTable;

namespace {

Nat config(const std::string& pool, unsigned first, unsigned last, unsigned size, unsigned max, unsigned idle = 120) {
    Nat n;
    n.zone = 1;
    for (const auto& p : {pool}) n.pool.push_back(*IpPrefix::parse(p));
    n.ports = {static_cast<std::uint16_t>(first), static_cast<std::uint16_t>(last)};
    n.chunk_size = size;
    n.max_chunks_per_subscriber = max;
    n.chunk_idle_seconds = idle;
    return n;
}

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

}  // namespace

TEST_CASE("a subscriber's first chunk is chunk_size consecutive ports on a pool address, and logged") {
    ChunkTable t(config("198.51.100.0/30", 1024, 65535, 512, 4));
    auto c = t.pull(ip("10.100.0.2"), 1000);
    REQUIRE(c.ok());
    const auto p = t.ports(*c);
    CHECK(p.address == ip("198.51.100.0"));
    CHECK(p.first == 1024);
    CHECK(p.last == 1535);
    auto ev = t.take_events();
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].kind == nat::ChunkEvent::Kind::Allocated);
    CHECK(ev[0].at == 1000);
    CHECK(ev[0].subscriber == ip("10.100.0.2"));
    CHECK(ev[0].ports.address == ip("198.51.100.0"));
    CHECK(t.chunk_at(ip("198.51.100.0"), 1300) == *c);
    CHECK(t.holder(*c) == ip("10.100.0.2"));
}

TEST_CASE("paired pooling: every chunk of a subscriber is on the same address; new subscribers spread") {
    ChunkTable t(config("198.51.100.0/30", 1024, 65535, 512, 4));
    std::set<std::string> first_addresses;
    for (int s = 0; s < 4; ++s) {
        const IpAddress sub = IpAddress::v4(0x0a640002u + static_cast<std::uint32_t>(s));
        auto a = t.pull(sub, 0);
        REQUIRE(a.ok());
        first_addresses.insert(t.ports(*a).address.str());
        for (int more = 0; more < 3; ++more) {
            auto b = t.pull(sub, 0);
            REQUIRE(b.ok());
            CHECK(t.ports(*b).address == t.ports(*a).address);
        }
        CHECK(t.chunks_of(sub).size() == 4);
    }
    CHECK(first_addresses.size() == 4);  // round-robin over the /30
}

TEST_CASE("beyond max_chunks_per_subscriber: refused, nobody else disturbed") {
    ChunkTable t(config("198.51.100.0/30", 1024, 65535, 512, 2));
    const auto s = ip("10.100.0.2");
    REQUIRE(t.pull(s, 0).ok());
    REQUIRE(t.pull(s, 0).ok());
    auto third = t.pull(s, 0);
    REQUIRE_FALSE(third.ok());
    CHECK(third.error() == nat::Refusal::ChunkLimit);
    CHECK(t.chunks_of(s).size() == 2);
    CHECK(t.pull(ip("10.100.0.3"), 0).ok());
}

TEST_CASE("an exhausted pool refuses as pool-empty; a subscriber's own address running out does too") {
    // One address, ports 1024..2047: two chunks of 512.
    ChunkTable t(config("198.51.100.7/32", 1024, 2047, 512, 2));
    REQUIRE(t.pull(ip("10.0.0.1"), 0).ok());
    REQUIRE(t.pull(ip("10.0.0.2"), 0).ok());
    auto r = t.pull(ip("10.0.0.3"), 0);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error() == nat::Refusal::PoolEmpty);
    auto grow = t.pull(ip("10.0.0.1"), 0);
    REQUIRE_FALSE(grow.ok());
    CHECK(grow.error() == nat::Refusal::PoolEmpty);
}

TEST_CASE("an idle chunk is released after chunk_idle_seconds, and its ports rest 120 s more") {
    ChunkTable t(config("198.51.100.7/32", 1024, 2047, 512, 1, 60));
    const auto a = ip("10.0.0.1");
    auto c = t.pull(a, 100);
    REQUIRE(c.ok());
    t.connection_opened(*c);
    t.connection_closed(*c, 200);  // idle from 200
    CHECK(t.release_idle(259).empty());
    auto ev = t.release_idle(260);
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].kind == nat::ChunkEvent::Kind::Released);
    CHECK(ev[0].ports.first == t.ports(*c).first);
    CHECK(t.chunks_of(a).empty());
    CHECK(t.subscribers() == 0);

    // The other chunk is still free; after it, the released one is in quarantine.
    auto other = t.pull(ip("10.0.0.2"), 261);
    REQUIRE(other.ok());
    CHECK(*other != *c);
    CHECK_FALSE(t.pull(ip("10.0.0.3"), 379).ok());  // 260 + 120 not reached
    {
        const auto use = t.pool_use();  // one address, two chunks: one held, one resting
        REQUIRE(use.size() == 1);
        CHECK(use[0].address == ip("198.51.100.7"));
        CHECK(use[0].chunks == 2);
        CHECK(use[0].held == 1);
        CHECK(use[0].free == 0);
        CHECK(use[0].quarantined == 1);
    }
    auto again = t.pull(ip("10.0.0.3"), 380);
    REQUIRE(again.ok());
    CHECK(*again == *c);
}

TEST_CASE("a chunk with live connections is never released") {
    ChunkTable t(config("198.51.100.7/32", 1024, 2047, 512, 1, 60));
    auto c = t.pull(ip("10.0.0.1"), 0);
    REQUIRE(c.ok());
    t.connection_opened(*c);
    t.connection_opened(*c);
    t.connection_closed(*c, 10);
    CHECK(t.release_idle(100000).empty());
    CHECK(t.connections(*c) == 1);
}

TEST_CASE("after a restart, chunks seen in conntrack are adopted, keeping the pairing rules") {
    ChunkTable t(config("198.51.100.0/30", 1024, 65535, 512, 2));
    const auto id = *t.chunk_at(ip("198.51.100.2"), 5000);
    REQUIRE(t.adopt(ip("10.0.0.9"), id, 0).ok());
    CHECK(t.holder(id) == ip("10.0.0.9"));
    CHECK(t.ports(id).first <= 5000);
    CHECK(t.ports(id).last >= 5000);
    // Its next chunk comes from the same address, and never the adopted one again.
    auto next = t.pull(ip("10.0.0.9"), 0);
    REQUIRE(next.ok());
    CHECK(t.ports(*next).address == ip("198.51.100.2"));
    CHECK(*next != id);
    auto elsewhere = t.adopt(ip("10.0.0.9"), *t.chunk_at(ip("198.51.100.1"), 2000), 0);
    REQUIRE_FALSE(elsewhere.ok());
    CHECK(elsewhere.error().find("paired pooling allows one address") != std::string::npos);
    auto third = t.adopt(ip("10.0.0.9"), *t.chunk_at(ip("198.51.100.2"), 9000), 0);
    REQUIRE_FALSE(third.ok());
    CHECK(third.error().find("already holds its 2 chunks") != std::string::npos);
    auto taken = t.adopt(ip("10.0.0.8"), id, 0);
    REQUIRE_FALSE(taken.ok());
    CHECK(taken.error().find("already held by 10.0.0.9") != std::string::npos);
    // Fresh chunks skipped over by the adoption stay allocatable.
    std::set<nat::ChunkId> seen{id, *next};
    for (int i = 0; i < 40; ++i) {
        auto c = t.pull(IpAddress::v4(0x0b000000u + static_cast<std::uint32_t>(i)), 0);
        REQUIRE(c.ok());
        CHECK(seen.insert(*c).second);
    }
}

TEST_CASE("ports outside the range or the pool belong to no chunk") {
    ChunkTable t(config("198.51.100.0/30", 1024, 2047, 512, 2));
    CHECK_FALSE(t.chunk_at(ip("198.51.100.0"), 80));
    CHECK_FALSE(t.chunk_at(ip("198.51.100.0"), 2048));
    CHECK_FALSE(t.chunk_at(ip("198.51.101.0"), 1500));
    CHECK(t.chunk_at(ip("198.51.100.3"), 2047) == 3 * 2 + 1);
}

TEST_CASE("100k subscribers fit: each gets a chunk, all distinct") {
    // A /20 with 126 chunks per address holds 516k chunks.
    ChunkTable t(config("100.64.0.0/20", 1024, 65535, 512, 4));
    std::set<nat::ChunkId> ids;
    for (std::uint32_t s = 0; s < 100000; ++s) {
        auto c = t.pull(IpAddress::v4(0x0a000000u + s), 0);
        REQUIRE(c.ok());
        ids.insert(*c);
    }
    CHECK(ids.size() == 100000);
    CHECK(t.subscribers() == 100000);
    CHECK(t.chunks_held() == 100000);
}

TEST_CASE("each allocation and release is one log line that answers who had which port when") {
    nat::ChunkEvent e{nat::ChunkEvent::Kind::Allocated, 5, ip("10.100.0.2"),
                      nat::ChunkPorts{ip("198.51.100.3"), 4608, 5119}};
    CHECK(nat::log_line(e, 1795010531) ==
          "<5>chunk-allocated time=2026-11-18T14:02:11Z subscriber=10.100.0.2 public=198.51.100.3 ports=4608-5119\n");
    e.kind = nat::ChunkEvent::Kind::Released;
    CHECK(nat::log_line(e, 0).rfind("<5>chunk-released time=1970-01-01T00:00:00Z ", 0) == 0);
}

TEST_CASE("pool utilisation: chunks held per public address, in pool order, back to zero on release") {
    ChunkTable t(config("198.51.100.0/31", 1024, 65535, 512, 4, 10));
    CHECK(t.chunks_per_address() == 126);
    REQUIRE(t.pull(ip("10.100.0.2"), 0).ok());
    REQUIRE(t.pull(ip("10.100.0.2"), 0).ok());
    REQUIRE(t.pull(ip("10.100.0.3"), 0).ok());
    const auto use = t.pool_use();
    REQUIRE(use.size() == 2);
    CHECK(use[0].address == ip("198.51.100.0"));
    CHECK(use[1].address == ip("198.51.100.1"));
    CHECK(use[0].held + use[1].held == 3);
    CHECK(std::max(use[0].held, use[1].held) == 2);  // paired pooling: both of 10.100.0.2's together
    CHECK(use[0].free + use[1].free == 2 * 126 - 3);
    t.release_idle(100);
    for (const auto& u : t.pool_use()) {
        CHECK(u.held == 0);
        CHECK(u.quarantined + u.free == 126);
    }
}

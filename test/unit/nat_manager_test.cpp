// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include <array>
#include <map>
#include <random>

#include "core/nat/nat_manager.hpp"

using namespace dpo;

namespace {

Nat small() {
    Nat n;
    n.zone = 1;
    n.pool = {*IpPrefix::parse("198.51.100.0/30")};
    n.ports = {1024, 2047};  // two chunks of 512 per address
    n.chunk_size = 512;
    n.max_chunks_per_subscriber = 2;
    n.chunk_idle_seconds = 60;
    return n;
}

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

}  // namespace

TEST_CASE("the IPv4 source of a punted frame, tagged or not") {
    std::vector<std::uint8_t> f(14 + 4 + 20, 0);
    f[12] = 0x81; f[13] = 0x00;        // 802.1Q
    f[16] = 0x08; f[17] = 0x00;        // IPv4
    f[18] = 0x45;
    f[18 + 12] = 10; f[18 + 13] = 100; f[18 + 14] = 0; f[18 + 15] = 2;
    CHECK(nat::ipv4_source(f) == ip("10.100.0.2"));
    // The same packet without the tag: MACs, then the IPv4 ethertype and header.
    std::vector<std::uint8_t> untagged(f.size() - 4, 0);
    for (std::size_t i = 0; i < untagged.size(); ++i) untagged[i] = f[i < 12 ? i : i + 4];
    CHECK(nat::ipv4_source(untagged) == ip("10.100.0.2"));
    f[16] = 0x86; f[17] = 0xdd;        // IPv6: not ours to translate
    CHECK_FALSE(nat::ipv4_source(f));
    CHECK_FALSE(nat::ipv4_source(std::vector<std::uint8_t>(20, 0)));
    CHECK_FALSE(nat::ipv4_source({}));
    f[16] = 0x08; f[17] = 0x00;
    f[18] = 0x44;                      // a header length of 4 words: not an IPv4 header
    CHECK_FALSE(nat::ipv4_source(f));
    // Every truncation of a good frame: an address or nothing, never a read past its end.
    f[18] = 0x45;
    for (std::size_t n = 0; n < f.size(); ++n)
        CHECK_FALSE(nat::ipv4_source(std::vector<std::uint8_t>(f.begin(), f.begin() + static_cast<long>(n))));
}

TEST_CASE("a first packet pulls a chunk; the compiler's state commits new connections into it") {
    nat::NatManager m(small());
    auto c = m.first_packet(ip("10.100.0.2"), 10);
    REQUIRE(c.ok());
    // A second punted packet before the rule landed needs no second chunk.
    CHECK(m.first_packet(ip("10.100.0.2"), 10).value() == *c);
    auto s = m.state(42, "dpo-inject");
    CHECK(s.punt_ifindex == 42);
    REQUIRE(s.subscribers.size() == 1);
    CHECK(s.subscribers[0].address == ip("10.100.0.2"));
    REQUIRE(s.subscribers[0].commit);
    CHECK(s.subscribers[0].commit->first == 1024);
    auto events = m.take_events();
    REQUIRE(events.size() == 1);
    CHECK(nat::log_line(events[0], 0).find("chunk-allocated") != std::string::npos);
}

TEST_CASE("a filling chunk pulls the next one ahead of need; at the limit new connections are refused") {
    nat::NatManager m(small());
    const auto sub = ip("10.100.0.2");
    REQUIRE(m.first_packet(sub, 0).ok());
    const auto first = m.state(0, "").subscribers[0].commit->address;
    for (std::uint16_t p = 1024; p < 1024 + 512; ++p) m.connection_new({sub, first, p}, 1);
    auto s = m.state(0, "");
    REQUIRE(s.subscribers[0].commit);
    CHECK(s.subscribers[0].commit->first == 1536);  // the second chunk, same address
    CHECK(s.subscribers[0].commit->address == first);
    (void)m.take_changed();
    for (std::uint16_t p = 1536; p < 1536 + 512; ++p) m.connection_new({sub, first, p}, 2);
    CHECK_FALSE(m.state(0, "").subscribers[0].commit);  // full and at its limit: drop
    CHECK(m.take_changed() == std::vector{sub});         // ... and its rule must say so
    CHECK(m.counters().chunk_limit == 1);
    const auto refusals = m.take_refusals();  // for the log and IPFIX's quota-exceeded event
    REQUIRE(refusals.size() == 1);
    CHECK(refusals[0].subscriber == sub);
    CHECK(refusals[0].why == nat::Refusal::ChunkLimit);
    CHECK(m.take_refusals().empty());
    m.connection_end({sub, first, 1600}, 3);
    CHECK(m.state(0, "").subscribers[0].commit);
    CHECK(m.take_changed() == std::vector{sub});
    m.connection_end({sub, first, 1601}, 3);
    CHECK(m.take_changed().empty());  // it was not full any more: nothing to change
}

TEST_CASE("idle chunks go back; a resync recounts from conntrack and adopts what it finds") {
    nat::NatManager m(small());
    const auto sub = ip("10.100.0.2");
    REQUIRE(m.first_packet(sub, 0).ok());
    (void)m.take_events();
    m.tick(59);
    CHECK(m.table().chunks_held() == 1);
    m.tick(60);
    CHECK(m.table().chunks_held() == 0);
    auto ev = m.take_events();
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].kind == nat::ChunkEvent::Kind::Released);

    // After a restart: a connection of 10.100.0.9 on 198.51.100.2:1700 makes its chunk held.
    nat::NatManager r(small());
    r.resync({{ip("10.100.0.9"), ip("198.51.100.2"), 1700}}, 100);
    REQUIRE(r.table().chunks_held() == 1);
    CHECK(r.state(0, "").subscribers[0].commit->first == 1536);
    CHECK(r.take_events().empty());  // adoption is not an allocation
    r.tick(100000);
    CHECK(r.table().chunks_held() == 1);  // it has a live connection
}

TEST_CASE("a subscriber the pool cannot serve gets a drop rule, not a punt per packet, until a chunk frees") {
    Nat n = small();
    n.pool = {*IpPrefix::parse("198.51.100.7/32")};  // two chunks in all
    n.max_chunks_per_subscriber = 1;
    nat::NatManager m(n);
    REQUIRE(m.first_packet(ip("10.0.0.1"), 0).ok());
    REQUIRE(m.first_packet(ip("10.0.0.2"), 0).ok());
    (void)m.take_changed();
    auto r = m.first_packet(ip("10.0.0.3"), 0);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error() == nat::Refusal::PoolEmpty);
    CHECK(m.take_changed() == std::vector{ip("10.0.0.3")});
    auto s = m.state(1, "x");
    const auto it = std::find_if(s.subscribers.begin(), s.subscribers.end(),
                                 [&](const nat::NatSubscriber& x) { return x.address == ip("10.0.0.3"); });
    REQUIRE(it != s.subscribers.end());
    CHECK_FALSE(it->commit);
    CHECK(it->refusal == nat::Refusal::PoolEmpty);
    CHECK(m.counters().pool_empty == 1);
    // The chunks go idle at 60 s, then rest 120 s: only then may the starved try again.
    m.tick(60);
    CHECK(m.take_changed() == std::vector{ip("10.0.0.1"), ip("10.0.0.2")});  // their chunks went
    CHECK(m.state(1, "x").subscribers.size() == 1);  // still the drop rule of 10.0.0.3
    m.tick(180);
    CHECK(m.take_changed() == std::vector{ip("10.0.0.3")});
    CHECK(m.state(1, "x").subscribers.empty());
}

TEST_CASE("a flood of sources the pool cannot serve makes a bounded number of drop rules") {
    Nat n = small();
    n.pool = {*IpPrefix::parse("198.51.100.7/32")};
    nat::NatManager m(n);
    std::size_t refused = 0;
    for (std::uint32_t i = 0; i < nat::NatManager::kMaxStarved + 5000; ++i) {
        const std::array<std::uint8_t, 4> b{10, static_cast<std::uint8_t>(i >> 16), static_cast<std::uint8_t>(i >> 8),
                                            static_cast<std::uint8_t>(i)};
        if (!m.first_packet(IpAddress::from_bytes(Family::V4, b.data()), 0).ok()) ++refused;
    }
    CHECK(refused == nat::NatManager::kMaxStarved + 5000 - 2);  // two chunks in the pool
    // Two subscribers with a chunk, and no more drop rules than the bound.
    CHECK(m.state(1, "x").subscribers.size() == 2 + nat::NatManager::kMaxStarved);
    CHECK(m.counters().pool_empty == refused);
}

TEST_CASE("the subscribers said to have changed are every one whose rule input changed") {
    Nat n = small();
    n.pool = {*IpPrefix::parse("198.51.100.0/30")};  // 4 addresses, 8 chunks
    n.max_chunks_per_subscriber = 2;
    n.chunk_idle_seconds = 5;
    std::mt19937 rng(3);
    for (int run = 0; run < 50; ++run) {
        nat::NatManager m(n);
        std::map<IpAddress, std::optional<nat::NatSubscriber>> seen;
        nat::Seconds now = 0;
        std::vector<nat::Connection> open;
        for (int step = 0; step < 300; ++step) {
            const IpAddress sub = IpAddress::v4(0x0a000001u + rng() % 6);
            const int what = static_cast<int>(rng() % 4);
            if (what == 0) {
                (void)m.first_packet(sub, now);
            } else if (what == 1) {
                if (auto s = m.subscriber(sub); s && s->commit) {
                    const nat::Connection c{sub, s->commit->address,
                                            static_cast<std::uint16_t>(s->commit->first + rng() % 512)};
                    m.connection_new(c, now);
                    open.push_back(c);
                }
            } else if (what == 2 && !open.empty()) {
                const auto i = rng() % open.size();
                m.connection_end(open[i], now);
                open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
            } else {
                now += rng() % 4;
                m.tick(now);
            }
            const auto changed = m.take_changed();
            for (std::uint32_t a = 0; a < 6; ++a) {
                const IpAddress x = IpAddress::v4(0x0a000001u + a);
                const auto s = m.subscriber(x);
                if (s != seen[x]) {
                    INFO("run " << run << " step " << step << " subscriber " << x.str());
                    CHECK(std::find(changed.begin(), changed.end(), x) != changed.end());
                }
                seen[x] = s;
            }
        }
    }
}

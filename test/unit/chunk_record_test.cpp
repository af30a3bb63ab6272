// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <vector>

#include "core/nat/chunk_record.hpp"

using namespace dpo;
using nat::ChunkEvent;
using nat::RecordEntry;

namespace {

std::vector<std::uint8_t> bytes_of(const std::vector<RecordEntry>& events) {
    std::vector<std::uint8_t> out(events.size() * nat::kRecordSize);
    for (std::size_t i = 0; i < events.size(); ++i) nat::encode(events[i], out.data() + i * nat::kRecordSize);
    return out;
}

RecordEntry ev(ChunkEvent::Kind k, std::int64_t ms, std::uint32_t sub, std::uint32_t pub, std::uint16_t first,
               std::uint16_t last) {
    return {k, ms, sub, pub, first, last};
}

}  // namespace

TEST_CASE("chunk record: a record encodes and decodes to itself") {
    const auto e = ev(ChunkEvent::Kind::Released, 1764510120123, 0x0a640002, 0xc6336403, 4608, 5119);
    std::uint8_t b[nat::kRecordSize];
    nat::encode(e, b);
    REQUIRE(nat::decode(b) == e);
    b[0] = 0;  // not a record's start
    CHECK_FALSE(nat::decode(b));
    nat::encode(e, b);
    b[1] = 0x13;  // kind 3 does not exist
    CHECK_FALSE(nat::decode(b));
}

TEST_CASE("chunk record: who held a port, at any time, in pieces of any size") {
    const std::uint32_t pub = 0xc6336403;
    const std::vector<RecordEntry> events = {
        ev(ChunkEvent::Kind::Allocated, 1000, 0x0a000001, pub, 1024, 1535),
        ev(ChunkEvent::Kind::Allocated, 2000, 0x0a000002, pub, 1536, 2047),
        ev(ChunkEvent::Kind::Released, 3000, 0x0a000001, pub, 1024, 1535),
        ev(ChunkEvent::Kind::Allocated, 4000, 0x0a000003, pub, 1024, 1535),
    };
    const auto bytes = bytes_of(events);
    struct Case {
        std::uint16_t port;
        std::int64_t at;
        std::optional<std::uint32_t> holder;  // nothing: free or never
        bool any;
    } cases[] = {{1100, 999, {}, false},  {1100, 1000, 0x0a000001, true}, {1100, 2999, 0x0a000001, true},
                 {1100, 3000, {}, true},  {1535, 4000, 0x0a000003, true}, {1536, 2500, 0x0a000002, true},
                 {2048, 9999, {}, false}};
    for (std::size_t piece : {std::size_t{1}, std::size_t{7}, nat::kRecordSize, bytes.size()}) {
        for (const auto& c : cases) {
            nat::WhoSearch s(pub, c.port, c.at);
            for (std::size_t i = 0; i < bytes.size(); i += piece)
                s.feed({bytes.data() + i, std::min(piece, bytes.size() - i)});
            INFO("piece " << piece << " port " << c.port << " at " << c.at);
            REQUIRE(s.last().has_value() == c.any);
            if (c.holder) {
                REQUIRE(s.last()->kind == ChunkEvent::Kind::Allocated);
                CHECK(s.last()->subscriber == *c.holder);
            } else if (c.any) {
                CHECK(s.last()->kind == ChunkEvent::Kind::Released);
            }
            CHECK(s.records() == events.size());
            CHECK(s.record_begins_ms() == 1000);
        }
    }
}

TEST_CASE("chunk record: a torn tail is not read as a record, and does not shift the next file") {
    const std::uint32_t pub = 1;
    auto a = bytes_of({ev(ChunkEvent::Kind::Allocated, 10, 7, pub, 0, 99)});
    a.resize(a.size() + 5, 0xd9);  // half a record, then the file ends
    const auto b = bytes_of({ev(ChunkEvent::Kind::Allocated, 20, 8, pub, 100, 199)});
    nat::WhoSearch s(pub, 150, 100);
    s.feed(a);
    s.end_of_file();
    s.feed(b);
    REQUIRE(s.last());
    CHECK(s.last()->subscriber == 8);
    CHECK(s.records() == 2);
}

TEST_CASE("chunk record: 100,000 events of churn, each answered") {
    // The property behind `nat who`: for every port and time, the answer is the last
    // event about that port up to then. The oracle replays the events into a map.
    std::mt19937 rng(7);
    std::vector<RecordEntry> events;
    std::map<std::pair<std::uint32_t, std::uint16_t>, std::uint32_t> holder;  // (public, first) -> subscriber
    const std::uint32_t pub0 = 0xc6336400;
    std::int64_t t = 1'700'000'000'000;
    while (events.size() < 100000) {
        const std::uint32_t pub = pub0 + rng() % 4;
        const std::uint16_t first = static_cast<std::uint16_t>(1024 + (rng() % 126) * 512);
        t += rng() % 3;
        auto it = holder.find({pub, first});
        if (it == holder.end()) {
            const std::uint32_t sub = 0x0a000000 + rng() % 100000;
            holder[{pub, first}] = sub;
            events.push_back(ev(ChunkEvent::Kind::Allocated, t, sub, pub, first, static_cast<std::uint16_t>(first + 511)));
        } else {
            events.push_back(
                ev(ChunkEvent::Kind::Released, t, it->second, pub, first, static_cast<std::uint16_t>(first + 511)));
            holder.erase(it);
        }
    }
    const auto bytes = bytes_of(events);
    // Ask about 200 random (port, time) points, each against a replay up to then.
    for (int q = 0; q < 200; ++q) {
        const std::uint32_t pub = pub0 + rng() % 4;
        const std::uint16_t port = static_cast<std::uint16_t>(1024 + rng() % (126 * 512));
        const std::int64_t at = events[rng() % events.size()].unix_ms;
        std::optional<RecordEntry> want;
        for (const auto& e : events)
            if (e.public_address == pub && e.first <= port && port <= e.last && e.unix_ms <= at) want = e;
        nat::WhoSearch s(pub, port, at);
        s.feed(bytes);
        REQUIRE(s.last() == want);
    }
}

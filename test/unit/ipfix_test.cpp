// SPDX-License-Identifier: GPL-2.0-or-later
// The IPFIX bytes of NAT events, read back field by field as a collector reads them
// (RFC 7011 sections 3.1-3.4): header, template set, data sets, sequence numbers.
#include <catch2/catch.hpp>

#include <map>

#include "core/nat/ipfix.hpp"

namespace ipfix = dpo::nat::ipfix;
using Bytes = std::vector<std::uint8_t>;

namespace {

dpo::IpAddress ip(const char* s) { return *dpo::IpAddress::parse(s); }

struct Reader {
    const Bytes& b;
    std::size_t at = 0;
    std::uint64_t n(std::size_t len) {
        REQUIRE(at + len <= b.size());
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < len; ++i) v = (v << 8) | b[at + i];
        at += len;
        return v;
    }
};

struct Header {
    std::uint64_t version, length, export_time, sequence, domain;
};
using Template = std::vector<std::pair<std::uint16_t, std::uint16_t>>;  // (element id, length)
// A data record as element id -> value (all our elements are unsigned or IPv4, <= 8 bytes).
using Fields = std::map<std::uint16_t, std::uint64_t>;

struct Message {
    Header h{};
    std::map<std::uint16_t, Template> templates;
    std::vector<std::pair<std::uint16_t, Fields>> records;  // (template id, fields)
};

// Decodes one message the way a collector does: data sets by the templates known so far.
Message decode(const Bytes& b, std::map<std::uint16_t, Template>& known) {
    Message m;
    Reader r{b};
    m.h = {r.n(2), r.n(2), r.n(4), r.n(4), r.n(4)};
    REQUIRE(m.h.length == b.size());
    while (r.at < b.size()) {
        const auto set_start = r.at;
        const auto id = static_cast<std::uint16_t>(r.n(2));
        const auto len = r.n(2);
        REQUIRE(len >= 4);
        REQUIRE(set_start + len <= b.size());
        const auto end = set_start + len;
        if (id == 2) {
            while (r.at < end) {
                const auto tid = static_cast<std::uint16_t>(r.n(2));
                const auto count = r.n(2);
                Template t;
                for (std::uint64_t i = 0; i < count; ++i) {
                    const auto e = static_cast<std::uint16_t>(r.n(2));
                    const auto l = static_cast<std::uint16_t>(r.n(2));
                    REQUIRE((e & 0x8000) == 0);  // no enterprise elements
                    t.emplace_back(e, l);
                }
                m.templates[tid] = t;
                known[tid] = t;
            }
        } else {
            REQUIRE(id >= 256);
            REQUIRE(known.count(id));
            const Template& t = known[id];
            std::size_t w = 0;
            for (const auto& [e, l] : t) w += l;
            while (end - r.at >= w) {
                Fields f;
                for (const auto& [e, l] : t) f[e] = r.n(l);
                m.records.emplace_back(id, f);
            }
            REQUIRE(r.at == end);  // no padding: records fill the set
        }
        REQUIRE(r.at == end);
    }
    return m;
}

std::uint64_t v4(const char* s) {
    const auto a = ip(s);
    return (std::uint64_t{a.bytes[0]} << 24) | (std::uint64_t{a.bytes[1]} << 16) | (std::uint64_t{a.bytes[2]} << 8) |
           a.bytes[3];
}

ipfix::PortBlock block(bool allocated, std::uint64_t t, const char* sub, std::uint16_t first) {
    return {allocated, t, ip(sub), ip("198.51.100.3"), first, static_cast<std::uint16_t>(first + 511)};
}

}  // namespace

TEST_CASE("the template set is RFC 8158's port-block, quota-exceeded and addresses-exhausted templates") {
    ipfix::Stream s(7);
    const Bytes m = s.templates(1764000000);
    std::map<std::uint16_t, Template> known;
    const auto d = decode(m, known);
    CHECK(d.h.version == 10);
    CHECK(d.h.export_time == 1764000000);
    CHECK(d.h.sequence == 0);
    CHECK(d.h.domain == 7);
    CHECK(d.records.empty());
    REQUIRE(d.templates.size() == 3);
    CHECK(d.templates.at(256) == Template{{323, 8}, {230, 1}, {8, 4}, {225, 4}, {361, 2}, {362, 2}});
    CHECK(d.templates.at(257) == Template{{323, 8}, {230, 1}, {466, 4}, {473, 4}, {8, 4}});
    CHECK(d.templates.at(258) == Template{{323, 8}, {230, 1}, {283, 4}});
    CHECK(m.size() == 16 + 72);
}

TEST_CASE("each event becomes a data record with its natEvent and fields") {
    ipfix::Stream s(1);
    const std::vector<ipfix::Record> records{
        block(true, 1764000000123, "10.100.0.2", 4608),
        block(false, 1764000060456, "10.100.0.2", 4608),
        ipfix::QuotaExceeded{1764000001000, ip("10.100.0.3"), 4},
        ipfix::AddressesExhausted{1764000002000, ipfix::kPoolId},
        block(true, 1764000003000, "10.100.0.4", 1024),
    };
    const auto messages = s.encode(records, 1764000003, true);
    REQUIRE(messages.size() == 1);
    std::map<std::uint16_t, Template> known;
    const auto d = decode(messages[0], known);
    CHECK(d.h.sequence == 0);
    CHECK(d.templates.size() == 3);  // asked for: ahead of the data
    REQUIRE(d.records.size() == 5);

    CHECK(d.records[0].first == 256);
    CHECK(d.records[0].second == Fields{{323, 1764000000123}, {230, 16}, {8, v4("10.100.0.2")},
                                        {225, v4("198.51.100.3")}, {361, 4608}, {362, 5119}});
    CHECK(d.records[1].second.at(230) == 17);
    CHECK(d.records[1].second.at(323) == 1764000060456);
    CHECK(d.records[2].first == 257);
    CHECK(d.records[2].second == Fields{{323, 1764000001000}, {230, 13}, {466, 3}, {473, 4}, {8, v4("10.100.0.3")}});
    CHECK(d.records[3].first == 258);
    CHECK(d.records[3].second == Fields{{323, 1764000002000}, {230, 3}, {283, 1}});
    CHECK(d.records[4].first == 256);
    CHECK(d.records[4].second.at(361) == 1024);
    CHECK(d.records[4].second.at(362) == 1535);
    CHECK(s.sequence() == 5);

    // Without templates asked for, none is sent; the sequence number counts on.
    const auto next = s.encode(std::vector<ipfix::Record>{block(false, 1764000070000, "10.100.0.4", 1024)},
                               1764000070, false);
    REQUIRE(next.size() == 1);
    const auto d2 = decode(next[0], known);
    CHECK(d2.templates.empty());
    CHECK(d2.h.sequence == 5);
    CHECK(d2.records.size() == 1);
    // A template refresh carries the sequence number of the next data record.
    CHECK(decode(s.templates(1764000080), known).h.sequence == 6);
    CHECK(s.encode({}, 1764000080, true).empty());
}

TEST_CASE("a burst is cut into messages of at most 1400 bytes, sequence numbers counting records") {
    ipfix::Stream s(1);
    std::vector<ipfix::Record> records;
    for (std::uint32_t i = 0; i < 500; ++i) {
        if (i % 50 == 7) records.push_back(ipfix::QuotaExceeded{1000 + i, dpo::IpAddress::v4(0x0a640000 + i), 4});
        else records.push_back(ipfix::PortBlock{i % 2 == 0, 1000 + i, dpo::IpAddress::v4(0x0a640000 + i),
                                                ip("198.51.100.1"), static_cast<std::uint16_t>(1024 + i),
                                                static_cast<std::uint16_t>(1024 + i)});
    }
    const auto messages = s.encode(records, 1764000000, true);
    CHECK(messages.size() > 5);
    std::map<std::uint16_t, Template> known;
    std::uint64_t expected_sequence = 0;
    std::size_t next = 0;
    for (std::size_t k = 0; k < messages.size(); ++k) {
        INFO("message " << k);
        CHECK(messages[k].size() <= ipfix::kMaxMessageBytes);
        const auto d = decode(messages[k], known);
        CHECK(d.templates.empty() == (k != 0));
        CHECK(d.h.sequence == expected_sequence);
        // Full: the next record would not have fitted.
        if (k + 1 < messages.size()) CHECK(messages[k].size() + 21 + 4 > ipfix::kMaxMessageBytes);
        for (const auto& [tid, f] : d.records) {
            REQUIRE(next < records.size());
            CHECK(f.at(323) == 1000 + next);
            CHECK(f.at(8) == 0x0a640000 + next);
            CHECK(tid == (next % 50 == 7 ? 257 : 256));
            ++next;
        }
        expected_sequence += d.records.size();
    }
    CHECK(next == records.size());
    CHECK(s.sequence() == 500);
}

TEST_CASE("streams number independently: one per collector and observation domain") {
    ipfix::Stream a(1), b(2);
    const std::vector<ipfix::Record> one{block(true, 1, "10.100.0.2", 1024)};
    (void)a.encode(one, 1, true);
    (void)a.encode(one, 1, false);
    const auto mb = b.encode(one, 1, true);
    std::map<std::uint16_t, Template> known;
    const auto d = decode(mb[0], known);
    CHECK(d.h.sequence == 0);
    CHECK(d.h.domain == 2);
    CHECK(a.sequence() == 2);
    CHECK(b.sequence() == 1);
}

TEST_CASE("chunk events and refusals map to their records") {
    const dpo::nat::ChunkEvent alloc{dpo::nat::ChunkEvent::Kind::Allocated, 5, ip("10.100.0.2"),
                                     {ip("198.51.100.3"), 4608, 5119}};
    CHECK(ipfix::record(alloc, 1764000000123) ==
          ipfix::Record{ipfix::PortBlock{true, 1764000000123, ip("10.100.0.2"), ip("198.51.100.3"), 4608, 5119}});
    auto rel = alloc;
    rel.kind = dpo::nat::ChunkEvent::Kind::Released;
    CHECK_FALSE(std::get<ipfix::PortBlock>(ipfix::record(rel, 1)).allocated);
    CHECK(ipfix::record(dpo::nat::Refusal::ChunkLimit, ip("10.100.0.2"), 4, 9) ==
          ipfix::Record{ipfix::QuotaExceeded{9, ip("10.100.0.2"), 4}});
    CHECK(ipfix::record(dpo::nat::Refusal::PoolEmpty, ip("10.100.0.2"), 4, 9) ==
          ipfix::Record{ipfix::AddressesExhausted{9, ipfix::kPoolId}});
}

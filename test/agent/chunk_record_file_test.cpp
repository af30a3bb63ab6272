// SPDX-License-Identifier: GPL-2.0-or-later
// The chunk-event record on disk, as the daemon writes it and `nat who` reads it.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>

#include "chunk_record_file.hpp"

using namespace dpo;
using nat::ChunkEvent;
using nat::RecordEntry;

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/dpo-record-XXXXXX";
        path = mkdtemp(t);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

std::vector<std::uint8_t> read_all(const std::string& p) {
    std::vector<std::uint8_t> out;
    const int fd = ::open(p.c_str(), O_RDONLY);
    if (fd < 0) return out;
    std::uint8_t buf[65536];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.insert(out.end(), buf, buf + n);
    ::close(fd);
    return out;
}

// 100,000 chunk events of churn on 4 public addresses: each chunk allocated, then
// released, then allocated to another subscriber.
std::vector<RecordEntry> churn(std::size_t n) {
    std::mt19937 rng(11);
    std::vector<RecordEntry> out;
    std::map<std::pair<std::uint32_t, std::uint16_t>, std::uint32_t> holder;
    std::int64_t t = 1'764'500'000'000;
    while (out.size() < n) {
        const std::uint32_t pub = 0xc6336400 + rng() % 4;
        const auto first = static_cast<std::uint16_t>(1024 + (rng() % 126) * 512);
        t += 1 + rng() % 5;
        auto it = holder.find({pub, first});
        const auto last = static_cast<std::uint16_t>(first + 511);
        if (it == holder.end()) {
            const std::uint32_t sub = 0x0a000000 + rng() % 200000;
            holder[{pub, first}] = sub;
            out.push_back({ChunkEvent::Kind::Allocated, t, sub, pub, first, last});
        } else {
            out.push_back({ChunkEvent::Kind::Released, t, it->second, pub, first, last});
            holder.erase(it);
        }
    }
    return out;
}

}  // namespace

TEST_CASE("chunk record file: a burst of 100,000 chunk events all arrive where nat who looks") {
    TempDir dir;
    auto f = agent::ChunkRecordFile::open(dir.path);
    REQUIRE(f.ok());
    const auto events = churn(100000);
    // In batches as the NAT stage hands them over (one first-packet turn, one timer tick).
    std::mt19937 rng(3);
    for (std::size_t i = 0; i < events.size();) {
        const std::size_t n = std::min<std::size_t>(1 + rng() % 500, events.size() - i);
        (*f)->append({events.begin() + static_cast<long>(i), events.begin() + static_cast<long>(i + n)});
        i += n;
    }
    (*f)->sync();
    CHECK((*f)->appended() == events.size());
    CHECK((*f)->write_errors() == 0);

    // Every event is in the file, in order, byte for byte.
    const auto bytes = read_all(dir.path + "/chunk-events");
    REQUIRE(bytes.size() == events.size() * nat::kRecordSize);
    for (std::size_t i = 0; i < events.size(); ++i) {
        const auto e = nat::decode(bytes.data() + i * nat::kRecordSize);
        REQUIRE(e);
        REQUIRE(*e == events[i]);
    }
    // And `nat who` finds them: the holder of a port at the time of any event.
    for (int q = 0; q < 50; ++q) {
        const auto& e = events[rng() % events.size()];
        const auto port = static_cast<std::uint16_t>(e.first + rng() % 512);
        auto w = (*f)->who(e.public_address, port, e.unix_ms);
        REQUIRE(w.ok());
        REQUIRE(w->last);
        CHECK(w->last->kind == e.kind);
        CHECK(w->last->subscriber == e.subscriber);
        CHECK(w->records == events.size());
    }
}

TEST_CASE("chunk record file: rotation keeps the last file and the current one, and a reopen goes on") {
    TempDir dir;
    const std::uint64_t max = 1000 * nat::kRecordSize;
    const auto events = churn(2500);
    {
        auto f = agent::ChunkRecordFile::open(dir.path, max);
        REQUIRE(f.ok());
        (*f)->append({events.begin(), events.begin() + 1700});
    }
    // A torn write at the end (a crash): cut on reopen, then appended after.
    {
        const int fd = ::open((dir.path + "/chunk-events").c_str(), O_WRONLY | O_APPEND);
        REQUIRE(fd >= 0);
        REQUIRE(::write(fd, "\xd9\x11\x00", 3) == 3);
        ::close(fd);
    }
    auto f = agent::ChunkRecordFile::open(dir.path, max);
    REQUIRE(f.ok());
    CHECK((*f)->bytes() == 700 * nat::kRecordSize);
    (*f)->append({events.begin() + 1700, events.end()});
    // 2500 events in files of 1000: .1 holds 1000..1999, the current one 2000..2499.
    CHECK(read_all(dir.path + "/chunk-events.1").size() == 1000 * nat::kRecordSize);
    CHECK(read_all(dir.path + "/chunk-events").size() == 500 * nat::kRecordSize);
    const auto& newest = events.back();
    auto w = (*f)->who(newest.public_address, newest.first, newest.unix_ms);
    REQUIRE(w.ok());
    REQUIRE(w->last);
    CHECK(*w->last == newest);
    CHECK(w->records == 1500);
    CHECK(w->begins_ms == events[1000].unix_ms);
}

TEST_CASE("chunk record file: a directory it cannot write is an error value, not a crash") {
    auto f = agent::ChunkRecordFile::open("/proc/dpo-no-such-dir");
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().find("/proc/dpo-no-such-dir") != std::string::npos);
}

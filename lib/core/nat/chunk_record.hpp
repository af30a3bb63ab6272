// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The daemon's own record of chunk events, as bytes: what `dpoffloadctl nat who`
// answers from ("who had 198.51.100.3:4711 at 14:02"). The journal lines stay, but a
// journal may rate-limit, rotate or be shipped elsewhere; this record is written by the
// daemon before anything else sees the event, so a burst of churn cannot lose an
// attribution (agent/chunk_record_file.hpp keeps it on disk).
//
// One event is 24 bytes, little endian, appended in the order they happen:
//   0  u8   0xD9 (a record starts here)
//   1  u8   version (1) << 4 | kind (1 allocated, 2 released)
//   2  u16  first port        4  u16  last port        6  u16  0
//   8  i64  wall clock, ms since 1970 (UTC)
//   16 u32  subscriber (IPv4)  20 u32  public address (IPv4)
// A torn tail (a crash in the middle of a write) is shorter than 24 bytes and ignored;
// a record that does not start with the magic is skipped, not trusted.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "core/nat/chunks.hpp"

namespace dpo::nat {

inline constexpr std::size_t kRecordSize = 24;

struct RecordEntry {
    ChunkEvent::Kind kind = ChunkEvent::Kind::Allocated;
    std::int64_t unix_ms = 0;
    std::uint32_t subscriber = 0;      // IPv4, host order
    std::uint32_t public_address = 0;  // IPv4, host order
    std::uint16_t first = 0, last = 0;
    bool operator==(const RecordEntry&) const = default;
};

RecordEntry record_of(const ChunkEvent& e, std::int64_t unix_ms);
void encode(const RecordEntry& e, std::uint8_t out[kRecordSize]);
std::optional<RecordEntry> decode(const std::uint8_t in[kRecordSize]);

// Who held public_address:port at `at_ms`: fed the record's bytes oldest first, in
// pieces of any size (a piece may end inside a record). O(bytes fed), O(1) memory.
class WhoSearch {
public:
    WhoSearch(std::uint32_t public_address, std::uint16_t port, std::int64_t at_ms)
        : address_(public_address), port_(port), at_ms_(at_ms) {}
    void feed(std::span<const std::uint8_t> bytes);
    // A piece that is a file's end: what is left of a record is torn, not continued.
    void end_of_file() { partial_ = 0; }

    // The last event about that port at or before at_ms: Allocated: held by its
    // subscriber; Released: free since then. Nothing: no event for it in the record.
    const std::optional<RecordEntry>& last() const { return last_; }
    // The oldest event of the record (how far back an answer can look).
    std::optional<std::int64_t> record_begins_ms() const { return first_ms_; }
    std::uint64_t records() const { return records_; }
    std::uint64_t skipped() const { return skipped_; }

private:
    void take(const std::uint8_t* r);

    std::uint32_t address_;
    std::uint16_t port_;
    std::int64_t at_ms_;
    std::uint8_t buf_[kRecordSize]{};
    std::size_t partial_ = 0;
    std::optional<RecordEntry> last_;
    std::optional<std::int64_t> first_ms_;
    std::uint64_t records_ = 0, skipped_ = 0;
};

}  // namespace dpo::nat

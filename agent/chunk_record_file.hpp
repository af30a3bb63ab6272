// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The chunk-event record on disk (core/nat/chunk_record.hpp says what is in it):
// <state dir>/chunk-events, appended as events happen, and chunk-events.1, the one
// before it. When the current file reaches `max_bytes` it becomes .1 (the older .1
// goes), so the record keeps between one and two files' worth: at the default 64 MiB,
// 2.8 to 5.6 million events. Long retention is the collector's (IPFIX, nat.logging)
// or the journal's; this answers `nat who` on this host without either.
//
// Written with one write() per batch (O_APPEND) before the journal line, and
// fdatasync()ed at most once a second: a daemon crash loses nothing, a host crash at
// most the last second. A failing disk is said once a minute and never stops the NAT.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/nat/chunk_record.hpp"
#include "core/result.hpp"

namespace dpo::agent {

class ChunkRecordFile {
public:
    static constexpr std::uint64_t kDefaultMaxBytes = 64ull << 20;

    static Result<std::unique_ptr<ChunkRecordFile>> open(const std::string& dir,
                                                         std::uint64_t max_bytes = kDefaultMaxBytes);
    ~ChunkRecordFile();
    ChunkRecordFile(const ChunkRecordFile&) = delete;
    ChunkRecordFile& operator=(const ChunkRecordFile&) = delete;

    void append(const std::vector<nat::RecordEntry>& events);
    // Every second or so: flushes to disk what was appended since the last call.
    void sync();

    struct Who {
        std::optional<nat::RecordEntry> last;  // see nat::WhoSearch::last()
        std::optional<std::int64_t> begins_ms;
        std::uint64_t records = 0;
    };
    // Reads both files, oldest first: O(record), about 100 ms for a full 128 MiB.
    Result<Who> who(std::uint32_t public_address, std::uint16_t port, std::int64_t at_ms) const;

    const std::string& path() const { return path_; }
    std::uint64_t bytes() const { return size_; }
    std::uint64_t appended() const { return appended_; }
    std::uint64_t write_errors() const { return write_errors_; }

private:
    ChunkRecordFile(std::string path, int fd, std::uint64_t size, std::uint64_t max_bytes)
        : path_(std::move(path)), fd_(fd), size_(size), max_bytes_(max_bytes) {}
    void rotate();
    void failed(const char* what, int error);

    std::string path_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
    std::uint64_t max_bytes_;
    std::uint64_t appended_ = 0;
    std::uint64_t write_errors_ = 0;
    bool dirty_ = false;
    std::int64_t last_told_ = 0;  // monotonic seconds of the last failure said
};

}  // namespace dpo::agent

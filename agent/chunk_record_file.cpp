// SPDX-License-Identifier: GPL-2.0-or-later
#include "chunk_record_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "core/log.hpp"

namespace dpo::agent {

namespace {

std::int64_t monotonic_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

// Feeds one file to the search; a file that is not there is an empty one.
Result<Done> scan(const std::string& path, nat::WhoSearch& s) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return Done{};
        return fail(path + ": " + std::strerror(errno));
    }
    std::vector<std::uint8_t> buf(1 << 20);
    for (;;) {
        const ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            const int e = errno;
            ::close(fd);
            return fail(path + ": " + std::strerror(e));
        }
        if (n == 0) break;
        s.feed({buf.data(), static_cast<std::size_t>(n)});
    }
    s.end_of_file();
    ::close(fd);
    return Done{};
}

}  // namespace

Result<std::unique_ptr<ChunkRecordFile>> ChunkRecordFile::open(const std::string& dir, std::uint64_t max_bytes) {
    const std::string path = dir + "/chunk-events";
    if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return fail(dir + ": " + std::strerror(errno));
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) return fail(path + ": " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return fail(path + ": not a regular file");
    }
    // A crash in the middle of a write leaves a torn record: cut it, so that what is
    // appended next starts on a record's boundary.
    auto size = static_cast<std::uint64_t>(st.st_size);
    if (const auto torn = size % nat::kRecordSize) {
        size -= torn;
        if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
            const int e = errno;
            ::close(fd);
            return fail(path + ": cutting a torn record: " + std::strerror(e));
        }
    }
    return std::unique_ptr<ChunkRecordFile>(
        new ChunkRecordFile(path, fd, size, std::max<std::uint64_t>(max_bytes, nat::kRecordSize)));
}

ChunkRecordFile::~ChunkRecordFile() {
    if (fd_ >= 0) {
        if (dirty_) fdatasync(fd_);
        ::close(fd_);
    }
}

void ChunkRecordFile::failed(const char* what, int error) {
    ++write_errors_;
    const auto now = monotonic_seconds();
    if (last_told_ && now - last_told_ < 60) return;
    last_told_ = now;
    log::error("nat-record-failed", {{"file", path_}, {"action", what}, {"reason", std::strerror(error)},
                                     {"errors", std::to_string(write_errors_)},
                                     {"effect", "nat who misses these events; the journal lines remain"}});
}

void ChunkRecordFile::rotate() {
    if (fd_ >= 0) {
        fdatasync(fd_);
        ::close(fd_);
    }
    if (::rename(path_.c_str(), (path_ + ".1").c_str()) != 0) failed("rotate", errno);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_TRUNC, 0640);
    if (fd_ < 0) failed("open", errno);
    size_ = 0;
}

void ChunkRecordFile::append(const std::vector<nat::RecordEntry>& events) {
    std::size_t i = 0;
    while (i < events.size()) {
        if (size_ >= max_bytes_ || fd_ < 0) rotate();
        if (fd_ < 0) return;
        // One write per batch, up to the rotation point.
        const std::uint64_t room = (max_bytes_ - std::min(size_, max_bytes_)) / nat::kRecordSize;
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(events.size() - i, std::max<std::uint64_t>(room, 1)));
        std::vector<std::uint8_t> buf(n * nat::kRecordSize);
        for (std::size_t k = 0; k < n; ++k) nat::encode(events[i + k], buf.data() + k * nat::kRecordSize);
        const ssize_t w = ::write(fd_, buf.data(), buf.size());
        if (w != static_cast<ssize_t>(buf.size())) {
            failed("write", w < 0 ? errno : ENOSPC);
            if (w > 0) {  // a short write: cut it back to whole records
                size_ += static_cast<std::uint64_t>(w);
                size_ -= size_ % nat::kRecordSize;
                (void)!ftruncate(fd_, static_cast<off_t>(size_));
            }
            return;
        }
        size_ += buf.size();
        appended_ += n;
        dirty_ = true;
        i += n;
    }
}

void ChunkRecordFile::sync() {
    if (!dirty_ || fd_ < 0) return;
    dirty_ = false;
    if (fdatasync(fd_) != 0) failed("fdatasync", errno);
}

Result<ChunkRecordFile::Who> ChunkRecordFile::who(std::uint32_t public_address, std::uint16_t port,
                                                  std::int64_t at_ms) const {
    nat::WhoSearch s(public_address, port, at_ms);
    if (auto r = scan(path_ + ".1", s); !r) return fail(r.error());
    if (auto r = scan(path_, s); !r) return fail(r.error());
    return Who{s.last(), s.record_begins_ms(), s.records()};
}

}  // namespace dpo::agent

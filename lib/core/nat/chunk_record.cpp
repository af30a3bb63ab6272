// SPDX-License-Identifier: GPL-2.0-or-later
#include "core/nat/chunk_record.hpp"

#include <cstring>

namespace dpo::nat {

namespace {

constexpr std::uint8_t kMagic = 0xD9;
constexpr std::uint8_t kVersion = 1;

template <class T>
void put(std::uint8_t* p, T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> (8 * i));
}
template <class T>
T get(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= std::uint64_t{p[i]} << (8 * i);
    return static_cast<T>(v);
}

}  // namespace

RecordEntry record_of(const ChunkEvent& e, std::int64_t unix_ms) {
    return {e.kind, unix_ms, e.subscriber.v4_host_order(), e.ports.address.v4_host_order(), e.ports.first, e.ports.last};
}

void encode(const RecordEntry& e, std::uint8_t out[kRecordSize]) {
    std::memset(out, 0, kRecordSize);
    out[0] = kMagic;
    out[1] = static_cast<std::uint8_t>(kVersion << 4 | (e.kind == ChunkEvent::Kind::Allocated ? 1 : 2));
    put<std::uint16_t>(out + 2, e.first);
    put<std::uint16_t>(out + 4, e.last);
    put<std::int64_t>(out + 8, e.unix_ms);
    put<std::uint32_t>(out + 16, e.subscriber);
    put<std::uint32_t>(out + 20, e.public_address);
}

std::optional<RecordEntry> decode(const std::uint8_t in[kRecordSize]) {
    if (in[0] != kMagic || in[1] >> 4 != kVersion) return std::nullopt;
    const int kind = in[1] & 0xf;
    if (kind != 1 && kind != 2) return std::nullopt;
    RecordEntry e;
    e.kind = kind == 1 ? ChunkEvent::Kind::Allocated : ChunkEvent::Kind::Released;
    e.first = get<std::uint16_t>(in + 2);
    e.last = get<std::uint16_t>(in + 4);
    e.unix_ms = get<std::int64_t>(in + 8);
    e.subscriber = get<std::uint32_t>(in + 16);
    e.public_address = get<std::uint32_t>(in + 20);
    if (e.first > e.last) return std::nullopt;
    return e;
}

void WhoSearch::take(const std::uint8_t* r) {
    const auto e = decode(r);
    if (!e) {
        ++skipped_;
        return;
    }
    ++records_;
    if (!first_ms_) first_ms_ = e->unix_ms;
    // In the order written, not by time: a wall clock stepped back must not hide the
    // event that came after.
    if (e->public_address == address_ && e->first <= port_ && port_ <= e->last && e->unix_ms <= at_ms_) last_ = *e;
}

void WhoSearch::feed(std::span<const std::uint8_t> bytes) {
    std::size_t i = 0;
    if (partial_) {
        const std::size_t n = std::min(kRecordSize - partial_, bytes.size());
        std::memcpy(buf_ + partial_, bytes.data(), n);
        partial_ += n;
        i = n;
        if (partial_ < kRecordSize) return;
        take(buf_);
        partial_ = 0;
    }
    for (; i + kRecordSize <= bytes.size(); i += kRecordSize) take(bytes.data() + i);
    partial_ = bytes.size() - i;
    if (partial_) std::memcpy(buf_, bytes.data() + i, partial_);
}

}  // namespace dpo::nat

// SPDX-License-Identifier: GPL-2.0-or-later
// libFuzzer harness: the punt path's frame parser, nat::ipv4_source(), which turns a
// punted first packet (as PuntPort::receive() hands it over: its 802.1Q tag put back
// into the bytes) into the subscriber it came from (agent/nat_runtime.cpp on_punt).
//
// The frame is a heap block of exactly its length, so a read past it is a
// heap-buffer-overflow. Property: a subscriber is only ever read from an IPv4 header,
// behind at most one tag, at the right offset.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/nat/nat_manager.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::vector<std::uint8_t> frame(data, data + size);
    const auto sub = dpo::nat::ipv4_source(frame);
    if (!sub) return 0;
    std::size_t ip = 14;
    if (size >= 14 && ((data[12] == 0x81 && data[13] == 0x00) || (data[12] == 0x88 && data[13] == 0xa8))) ip = 18;
    const bool ok = sub->family == dpo::Family::V4 && size >= ip + 20 && data[ip - 2] == 0x08 && data[ip - 1] == 0x00 &&
                    (data[ip] >> 4) == 4 && std::memcmp(sub->bytes.data(), data + ip + 12, 4) == 0;
    if (!ok) {
        std::fprintf(stderr, "fuzz-punt-frame: subscriber %s from a %zu-byte frame that has none there\n",
                     sub->str().c_str(), size);
        std::abort();
    }
    return 0;
}

// SPDX-License-Identifier: GPL-2.0-or-later
// The chunk table at carrier scale: time per allocation and heap per subscriber.
// Numbers, not pass/fail: `meson test -C build --benchmark` or build/test/chunks-bench.
#include <chrono>
#include <cstdio>

#include "core/nat/chunks.hpp"

using namespace dpo;

int main() {
    Nat n;
    n.zone = 1;
    n.pool = {*IpPrefix::parse("100.64.0.0/20")};
    n.ports = {1024, 65535};
    n.chunk_size = 512;
    n.max_chunks_per_subscriber = 4;
    n.chunk_idle_seconds = 120;
    for (std::uint32_t subscribers : {10000u, 100000u, 400000u}) {
        nat::ChunkTable t(n);
        const auto t0 = std::chrono::steady_clock::now();
        for (std::uint32_t s = 0; s < subscribers; ++s)
            if (!t.pull(IpAddress::v4(0x0a000000u + s), 0).ok()) return 1;
        const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
        (void)t.take_events();
        const double bytes = static_cast<double>(t.table_bytes());
        std::printf("%7u subscribers: %4.0f ns per first chunk, subscriber and chunk tables %5.2f MiB (%2.0f B per "
                    "subscriber with one chunk)\n",
                    subscribers, ns / subscribers, bytes / (1 << 20), bytes / subscribers);
    }
    return 0;
}

// SPDX-License-Identifier: GPL-2.0-or-later
#include "malformed.hpp"

#include <array>
#include <atomic>

#include "log.hpp"

namespace dpo {

namespace {
constexpr std::size_t kKinds = static_cast<std::size_t>(Malformed::TcAction) + 1;
std::array<std::atomic<std::uint64_t>, kKinds> counts{};
}  // namespace

std::string_view to_string(Malformed kind) {
    switch (kind) {
    case Malformed::TcFilter: return "tc-filter";
    case Malformed::TcNotification: return "tc-notification";
    case Malformed::Rtnetlink: return "rtnetlink";
    case Malformed::Conntrack: return "conntrack";
    case Malformed::PuntFrame: return "punt-frame";
    case Malformed::TcAction: return "tc-action";
    }
    return "unknown";
}

void malformed(Malformed kind, std::string_view why) {
    if (counts[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed) == 0)
        log::warning("malformed-input", {{"kind", std::string(to_string(kind))},
                                         {"reason", std::string(why)},
                                         {"effect", "skipped; later ones of this kind are counted, not logged"}});
}

std::map<Malformed, std::uint64_t> malformed_counts() {
    std::map<Malformed, std::uint64_t> out;
    for (std::size_t i = 0; i < kKinds; ++i)
        if (const auto n = counts[i].load(std::memory_order_relaxed)) out[static_cast<Malformed>(i)] = n;
    return out;
}

}  // namespace dpo

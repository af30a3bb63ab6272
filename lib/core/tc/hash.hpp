// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// A rule's content as one 64-bit number: the engine keeps, per rule, only the hash of
// what it wants and of what the kernel has, and sends a rule when the two differ. The
// hash covers everything the kernel keeps of a rule (place, match, every action's
// parameters), not the words for people (`why`, a redirect's device name).
//
// Keyed (SipHash-1-3): a neighbour on the wire chooses its MAC, and so part of a rule's
// content; with a key it does not know it cannot make two contents collide and hide an
// update. The daemon draws a key at start; tests use the default.

#include <array>
#include <cstdint>

#include "core/tc/rule.hpp"

namespace dpo::tc {

using HashKey = std::array<std::uint64_t, 2>;
inline constexpr HashKey kDefaultHashKey = {0x646f66666c6f6164ULL, 0x2d72756c652d6b31ULL};

std::uint64_t content_hash(const Rule& r, const HashKey& key = kDefaultHashKey);

}  // namespace dpo::tc

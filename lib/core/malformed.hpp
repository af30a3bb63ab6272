// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Input from the kernel or the wire that does not decode (an attribute of the wrong
// type or length, a string without its NUL, a frame too short): it is skipped, never
// read past, counted by kind, and told once per kind, so that a stream of them can
// neither crash the daemon nor flood its log. A real kernel sends none; a count that
// is not zero means a kernel, a module or a peer that speaks something else.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace dpo {

enum class Malformed {
    TcFilter,         // a filter in a dump or a notification (tc_codec)
    TcNotification,   // a tc notification's header
    Rtnetlink,        // a link, address, route or neighbour message libnl refused
    Conntrack,        // a ctnetlink event or dump entry
    PuntFrame,        // a punted first packet that is not an IPv4 frame we can read
    TcAction,         // an action of an action dump (kernel/action_stats.hpp)
};

std::string_view to_string(Malformed kind);

// Counts one, and logs it (with `why`) the first time of each kind. Thread-safe: the
// tc writer decodes on a thread of its own.
void malformed(Malformed kind, std::string_view why);

// How many of each kind so far, for metrics and tests.
std::map<Malformed, std::uint64_t> malformed_counts();

}  // namespace dpo

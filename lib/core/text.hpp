// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Text from outside (a mapping file, a device name, an extack) on its way to a terminal
// or the journal: what is not printable is shown escaped, never echoed raw.

#include <cstdint>
#include <string>
#include <string_view>

namespace dpo {

// `s` with every byte that is not printable ASCII or part of a well-formed UTF-8
// character (no overlong forms, surrogates or code points above U+10FFFF) written as
// \xNN, and with control characters (tab and newline too) escaped the same way.
std::string printable(std::string_view s);

// A moment as ISO 8601 in UTC, to the second: "2026-11-23T14:02:11Z" (log lines, the
// control socket's answers).
std::string utc_iso8601(std::int64_t unix_seconds);

// The length of the well-formed UTF-8 character at the start of `s` (1-4), or 0 when
// it is not one (an ASCII byte counts, a control character too).
std::size_t utf8_char_length(std::string_view s);

}  // namespace dpo

// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Loads and checks the interface-mapping file. Every problem is reported, not just
// the first, each naming the file, the JSON Pointer (RFC 6901) of the offending
// value and the reason, so an operator can fix a file in one pass.

#include <string>
#include <string_view>
#include <vector>

#include "mapping.hpp"
#include "result.hpp"

namespace dpo {

struct Problem {
    std::string file;
    std::string path;  // JSON Pointer; "" is the whole document
    std::string reason;

    // "FILE: /interfaces/2/vlan: reason"
    std::string str() const;
};

using Problems = std::vector<Problem>;

// What a mapping file may be: its size, how deep it nests, and how many problems are
// told (the rest are counted in one more). A real file is a few KiB and 4 levels deep;
// the limits keep a hostile or broken one from costing more than a moment.
inline constexpr std::size_t kMaxMappingBytes = 4u << 20;
inline constexpr std::size_t kMaxMappingDepth = 32;
inline constexpr std::size_t kMaxMappingProblems = 100;

// Both take time linear in the size of the text and memory bounded by it.
Result<Mapping, Problems> parse_mapping(std::string_view text, const std::string& file);
// A regular file only, read up to kMaxMappingBytes (and one more byte, to tell).
Result<Mapping, Problems> load_mapping(const std::string& file);

}  // namespace dpo

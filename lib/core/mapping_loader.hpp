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

Result<Mapping, Problems> parse_mapping(std::string_view text, const std::string& file);
Result<Mapping, Problems> load_mapping(const std::string& file);

}  // namespace dpo

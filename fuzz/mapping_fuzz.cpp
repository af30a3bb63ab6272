// SPDX-License-Identifier: GPL-2.0-or-later
// libFuzzer harness: the interface-mapping loader (dpo::parse_mapping) on arbitrary
// text. Beyond "no crash, no sanitizer report": libFuzzer's -timeout and -rss_limit_mb
// hold it to bounded time and memory (issue 11 item 1), and every problem it reports
// must be printable (bytes from the file escaped, never echoed raw), at most
// kMaxMappingProblems of them plus the one that counts the rest.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string_view>

#include "core/compile/inventory.hpp"
#include "core/mapping_loader.hpp"
#include "core/text.hpp"

namespace {

[[noreturn]] void broken(const char* what, const std::string& detail) {
    std::fprintf(stderr, "fuzz-mapping: %s: %s\n", what, detail.c_str());
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto r = dpo::parse_mapping(text, "fuzz.json");
    if (r) {
        // A Mapping that exists passed every check: what --show prints from it must not
        // trip over it either.
        for (const auto& line : dpo::describe_mapping(*r))
            if (dpo::printable(line) != line) broken("unprintable line from a valid mapping", dpo::printable(line));
        return 0;
    }
    const auto& problems = r.error();
    if (problems.empty()) broken("refused without a problem", "");
    if (problems.size() > dpo::kMaxMappingProblems + 1) broken("too many problems", std::to_string(problems.size()));
    for (const auto& p : problems) {
        const std::string s = p.str();
        if (dpo::printable(s) != s) broken("problem not escaped", dpo::printable(s));
    }
    return 0;
}

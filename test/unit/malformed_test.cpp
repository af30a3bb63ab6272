// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>

#include "core/malformed.hpp"

TEST_CASE("malformed input is counted by kind") {
    const auto before = dpo::malformed_counts();
    auto count = [](const std::map<dpo::Malformed, std::uint64_t>& m, dpo::Malformed k) {
        auto it = m.find(k);
        return it == m.end() ? std::uint64_t{0} : it->second;
    };
    for (int i = 0; i < 1000; ++i) dpo::malformed(dpo::Malformed::PuntFrame, "a 3-byte frame");
    dpo::malformed(dpo::Malformed::TcFilter, "TCA attribute 1");
    const auto after = dpo::malformed_counts();
    CHECK(count(after, dpo::Malformed::PuntFrame) == count(before, dpo::Malformed::PuntFrame) + 1000);
    CHECK(count(after, dpo::Malformed::TcFilter) == count(before, dpo::Malformed::TcFilter) + 1);
    CHECK(count(after, dpo::Malformed::Conntrack) == count(before, dpo::Malformed::Conntrack));
    CHECK(dpo::to_string(dpo::Malformed::PuntFrame) == "punt-frame");
}

TEST_CASE("malformed input is logged once per kind, however much of it comes") {
    // stderr (the log) into a file for the duration
    std::fflush(stderr);
    FILE* tmp = std::tmpfile();
    REQUIRE(tmp);
    const int saved = dup(2);
    dup2(fileno(tmp), 2);
    for (int i = 0; i < 500; ++i) dpo::malformed(dpo::Malformed::Conntrack, "an event that cannot be parsed");
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::rewind(tmp);
    std::string text;
    for (int c; (c = std::fgetc(tmp)) != EOF;) text += static_cast<char>(c);
    std::fclose(tmp);
    std::size_t lines = 0;
    for (std::size_t p = 0; (p = text.find("malformed-input kind=conntrack", p)) != std::string::npos; ++p) ++lines;
    CHECK(lines == 1);
}

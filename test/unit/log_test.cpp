// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include "core/log.hpp"

using dpo::log::Level;

TEST_CASE("a log line carries the syslog priority prefix journald reads") {
    CHECK(dpo::log::format(Level::Notice, "started", {{"file", "/etc/m.json"}}) == "<5>started file=/etc/m.json\n");
    CHECK(dpo::log::format(Level::Error, "x", {}) == "<3>x\n");
}

TEST_CASE("values with spaces, quotes or newlines are quoted so a line stays one record") {
    CHECK(dpo::log::format(Level::Info, "e", {{"why", "two words"}}) == "<6>e why=\"two words\"\n");
    CHECK(dpo::log::format(Level::Info, "e", {{"why", "a\"b\nc"}}) == "<6>e why=\"a\\\"b\\nc\"\n");
    CHECK(dpo::log::format(Level::Info, "e", {{"empty", ""}}) == "<6>e empty=\"\"\n");
}

TEST_CASE("control characters and bytes that are not UTF-8 are escaped, never written raw") {
    // An escape sequence from a file or a device name must not reach a terminal.
    CHECK(dpo::log::format(Level::Info, "e", {{"v", "a\x1b[2Jb"}}) == "<6>e v=\"a\\x1b[2Jb\"\n");
    CHECK(dpo::log::format(Level::Info, "e", {{"v", "\xff\xfe"}}) == "<6>e v=\"\\xff\\xfe\"\n");
    CHECK(dpo::log::format(Level::Info, "e", {{"v", "tab\there"}}) == "<6>e v=\"tab\\there\"\n");
    CHECK(dpo::log::format(Level::Info, "e", {{"v", "back\\slash"}}) == "<6>e v=\"back\\\\slash\"\n");
    // Well-formed UTF-8 stays as it is, bare when nothing else needs quoting.
    CHECK(dpo::log::format(Level::Info, "e", {{"v", "caf\xc3\xa9"}}) == "<6>e v=caf\xc3\xa9\n");
}

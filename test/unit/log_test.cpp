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

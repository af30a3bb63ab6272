// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include <string>
#include <vector>

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

TEST_CASE("a key becomes an upper-cased journal field name") {
    using dpo::log::journal_field_name;
    CHECK(journal_field_name("subscriber") == "SUBSCRIBER");
    CHECK(journal_field_name("not_in_hw") == "NOT_IN_HW");
    CHECK(journal_field_name("nat-punt-pair") == "NAT_PUNT_PAIR");
    CHECK(journal_field_name("in6") == "IN6");
}

TEST_CASE("a key that would set a field journald or the format gives a meaning gets DPO_") {
    using dpo::log::journal_field_name;
    // journald's own meanings (systemd.journal-fields(7)) and this format's EVENT=.
    for (const char* k : {"message", "priority", "errno", "unit", "tid", "documentation", "invocation_id", "event"})
        CHECK(journal_field_name(k) == "DPO_" + journal_field_name(std::string("x_") + k).substr(2));
    CHECK(journal_field_name("message") == "DPO_MESSAGE");
    CHECK(journal_field_name("code_line") == "DPO_CODE_LINE");
    CHECK(journal_field_name("syslog_identifier") == "DPO_SYSLOG_IDENTIFIER");
    CHECK(journal_field_name("object_pid") == "DPO_OBJECT_PID");
    // The prefix itself is reserved, so "dpo_message" never meets the renamed "message".
    CHECK(journal_field_name("dpo_message") == "DPO_DPO_MESSAGE");
    // Names journald refuses: a leading '_' is for trusted fields, a digit is not allowed.
    CHECK(journal_field_name("_pid") == "DPO__PID");
    CHECK(journal_field_name("4tuple") == "DPO_4TUPLE");
    CHECK(journal_field_name("") == "DPO_");
    // Not a prefix match: the name differs.
    CHECK(journal_field_name("messages") == "MESSAGES");
    CHECK(journal_field_name("error") == "ERROR");
    CHECK(journal_field_name(std::string(80, 'a')).size() == 64);
}

TEST_CASE("a record as journald fields: the line as MESSAGE, PRIORITY, EVENT, one field per key") {
    const auto f = dpo::log::journal_fields(Level::Notice, "chunk-allocated",
                                            {{"time", "2026-11-23T23:02:51Z"},
                                             {"subscriber", "10.100.0.2"},
                                             {"public", "198.51.100.0"},
                                             {"ports", "1024-1535"},
                                             {"message", "two words"}});
    const std::vector<std::string> want = {
        "MESSAGE=chunk-allocated time=2026-11-23T23:02:51Z subscriber=10.100.0.2 public=198.51.100.0 "
        "ports=1024-1535 message=\"two words\"",
        "PRIORITY=5",
        "EVENT=chunk-allocated",
        "TIME=2026-11-23T23:02:51Z",
        "SUBSCRIBER=10.100.0.2",
        "PUBLIC=198.51.100.0",
        "PORTS=1024-1535",
        "DPO_MESSAGE=two words",
    };
    CHECK(f == want);
    // MESSAGE= is the stderr line without its prefix and newline.
    const auto line = dpo::log::format(Level::Notice, "chunk-allocated",
                                       {{"time", "2026-11-23T23:02:51Z"},
                                        {"subscriber", "10.100.0.2"},
                                        {"public", "198.51.100.0"},
                                        {"ports", "1024-1535"},
                                        {"message", "two words"}});
    CHECK("<5>" + f[0].substr(8) + "\n" == line);
}

TEST_CASE("a journal field holds a printable value as it is, anything else escaped as in the line") {
    const auto f = dpo::log::journal_fields(Level::Error, "rule-refused",
                                            {{"extack", "say \"no\" = 1"}, {"dev", "a\x1b[2Jb"}, {"v", "\xff"},
                                             {"nl", "a\nb"}, {"empty", ""}});
    REQUIRE(f.size() == 8);
    CHECK(f[1] == "PRIORITY=3");
    CHECK(f[3] == "EXTACK=say \"no\" = 1");  // matches what was logged, quotes and all
    CHECK(f[4] == "DEV=a\\x1b[2Jb");
    CHECK(f[5] == "V=\\xff");
    CHECK(f[6] == "NL=a\\nb");
    CHECK(f[7] == "EMPTY=");
}

namespace {
std::vector<std::string> g_seen;
void test_sink(Level level, std::string_view event, std::initializer_list<dpo::log::Field> fields) {
    g_seen.push_back(dpo::log::format(level, event, fields));
}
}  // namespace

TEST_CASE("a sink set at start receives every record instead of stderr") {
    g_seen.clear();
    dpo::log::set_sink(test_sink);
    dpo::log::notice("started", {{"file", "/etc/m.json"}});
    dpo::log::set_sink(nullptr);
    CHECK(g_seen == std::vector<std::string>{"<5>started file=/etc/m.json\n"});
}

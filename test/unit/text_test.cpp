// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include "core/text.hpp"

using dpo::printable;

TEST_CASE("printable text passes; control bytes and broken UTF-8 come out as \\xNN") {
    CHECK(printable("eth0 /interfaces/0") == "eth0 /interfaces/0");
    CHECK(printable("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    CHECK(printable("a\nb\tc\x1b") == "a\\x0ab\\x09c\\x1b");
    CHECK(printable(std::string("nul\0here", 8)) == "nul\\x00here");
    CHECK(printable("\x7f") == "\\x7f");
    CHECK(printable("\xff") == "\\xff");                  // never a UTF-8 byte
    CHECK(printable("\xc3") == "\\xc3");                  // a lead byte cut short
    CHECK(printable("\xc3(") == "\\xc3(");                // a lead byte without its continuation
    CHECK(printable("\x80") == "\\x80");                  // a continuation byte alone
    CHECK(printable("\xc0\xaf") == "\\xc0\\xaf");         // overlong '/'
    CHECK(printable("\xe0\x80\xaf") == "\\xe0\\x80\\xaf");  // overlong, three bytes
    CHECK(printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a UTF-16 surrogate
    CHECK(printable("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
}

// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include "core/ip.hpp"

using dpo::Family;
using dpo::IpAddress;
using dpo::IpPrefix;

TEST_CASE("addresses parse in both families and print back") {
    auto a = IpAddress::parse("198.51.100.3");
    REQUIRE(a);
    CHECK(a->family == Family::V4);
    CHECK(a->str() == "198.51.100.3");
    CHECK(*a == IpAddress::v4(0xc6336403));
    CHECK(a->v4_host_order() == 0xc6336403u);
    auto b = IpAddress::parse("fd00:0:0::1");
    REQUIRE(b);
    CHECK(b->family == Family::V6);
    CHECK(b->str() == "fd00::1");
}

TEST_CASE("malformed addresses are refused") {
    for (const char* bad : {"", "1.2.3", "1.2.3.256", "01.2.3.4x", "fd00:::1", "10.0.0.1/24", " 10.0.0.1",
                            "1234567890123456789012345678901234567890123456789"})
        CHECK_FALSE(IpAddress::parse(bad));
}

TEST_CASE("special addresses are recognised") {
    for (const char* s : {"0.0.0.0", "127.0.0.1", "224.0.0.1", "239.1.1.1", "255.255.255.255", "::", "::1", "ff02::1"})
        CHECK(IpAddress::parse(s)->is_special());
    for (const char* s : {"10.0.0.1", "198.51.100.1", "223.255.255.255", "fd00::1", "2001:db8::1"})
        CHECK_FALSE(IpAddress::parse(s)->is_special());
}

TEST_CASE("prefixes: parse, canonical form, containment and overlap") {
    auto p = IpPrefix::parse("198.51.100.0/28");
    REQUIRE(p);
    CHECK(p->length == 28);
    CHECK(p->is_canonical());
    CHECK(p->address_count() == 16);
    CHECK(p->contains(*IpAddress::parse("198.51.100.15")));
    CHECK_FALSE(p->contains(*IpAddress::parse("198.51.100.16")));
    CHECK_FALSE(p->contains(*IpAddress::parse("fd00::1")));

    CHECK_FALSE(IpPrefix::parse("198.51.100.1/28")->is_canonical());
    CHECK(IpPrefix::parse("10.0.0.1")->length == 32);
    CHECK(IpPrefix::parse("fd00::/64")->length == 64);
    CHECK_FALSE(IpPrefix::parse("fd00::/64")->overlaps(*IpPrefix::parse("10.0.0.0/8")));

    CHECK(IpPrefix::parse("10.0.0.0/8")->overlaps(*IpPrefix::parse("10.1.0.0/16")));
    CHECK(IpPrefix::parse("10.1.0.0/16")->overlaps(*IpPrefix::parse("10.0.0.0/8")));
    CHECK_FALSE(IpPrefix::parse("10.0.0.0/16")->overlaps(*IpPrefix::parse("10.1.0.0/16")));

    for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x", "fd00::/129", "x/8", "10.0.0.0/0008"})
        CHECK_FALSE(IpPrefix::parse(bad));
}

// SPDX-License-Identifier: GPL-2.0-or-later
// ctnetlink messages are checked before libnetfilter_conntrack parses them: 1.0.9
// exit()s the process on an attribute not of its type.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>

#include <vector>

#include "kernel/conntrack_watcher.hpp"

namespace {

// An IPCTNL_MSG_CT_NEW event of a UDP connection in zone 1; `bad` puts one attribute in
// with the wrong length: 0 none, 1 CTA_ZONE of one byte, 2 an IPv4 address of three
// bytes inside CTA_TUPLE_ORIG / CTA_TUPLE_IP, 3 a port of one byte, 4 CTA_HELP_NAME
// without its NUL.
std::vector<char> event(int bad) {
    std::vector<char> buf(1024, 0);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = AF_INET;
    nlattr* orig = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
    nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    if (bad == 2) {
        const char three[3] = {10, 0, 0};
        mnl_attr_put(nlh, CTA_IP_V4_SRC, 3, three);
    } else {
        mnl_attr_put_u32(nlh, CTA_IP_V4_SRC, htonl(0x0a640002));
    }
    mnl_attr_put_u32(nlh, CTA_IP_V4_DST, htonl(0xcb007109));
    mnl_attr_nest_end(nlh, ip);
    nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_UDP);
    if (bad == 3) mnl_attr_put_u8(nlh, CTA_PROTO_SRC_PORT, 1);
    else mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(40000));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(53));
    mnl_attr_nest_end(nlh, proto);
    mnl_attr_nest_end(nlh, orig);
    if (bad == 1) mnl_attr_put_u8(nlh, CTA_ZONE, 1);
    else mnl_attr_put_u16(nlh, CTA_ZONE, htons(1));
    if (bad == 4) {
        nlattr* help = mnl_attr_nest_start(nlh, CTA_HELP);
        mnl_attr_put(nlh, CTA_HELP_NAME, 4, "ftpx");
        mnl_attr_nest_end(nlh, help);
    }
    buf.resize(nlh->nlmsg_len);
    return buf;
}

}  // namespace

TEST_CASE("a well-formed ctnetlink event passes the check and parses") {
    auto m = event(0);
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(m.data());
    CHECK(dpo::kernel::conntrack_message_valid(nlh));
    nf_conntrack* ct = nfct_new();
    REQUIRE(ct);
    CHECK(nfct_nlmsg_parse(nlh, ct) == 0);
    CHECK(nfct_get_attr_u16(ct, ATTR_ZONE) == 1);
    CHECK(ntohs(nfct_get_attr_u16(ct, ATTR_ORIG_PORT_SRC)) == 40000);
    nfct_destroy(ct);
}

TEST_CASE("an attribute not of its type, at any depth, fails the check (the library would exit())") {
    for (int bad : {1, 2, 3, 4}) {
        INFO("bad " << bad);
        auto m = event(bad);
        CHECK_FALSE(dpo::kernel::conntrack_message_valid(reinterpret_cast<const nlmsghdr*>(m.data())));
    }
    // Shorter than its nfgenmsg header.
    auto m = event(0);
    auto* nlh = reinterpret_cast<nlmsghdr*>(m.data());
    nlh->nlmsg_len = sizeof(nlmsghdr) + 2;
    CHECK_FALSE(dpo::kernel::conntrack_message_valid(nlh));
}

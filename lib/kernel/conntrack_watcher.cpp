// SPDX-License-Identifier: GPL-2.0-or-later
#include "conntrack_watcher.hpp"

#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "core/malformed.hpp"
#include "kernel/tc_codec.hpp"

namespace dpo::kernel {

namespace {

// Rides out a burst of connection setups and teardowns while the daemon is busy
// elsewhere; what still overflows it is an overrun, answered by a dump.
constexpr int kReceiveBuffer = 32 * 1024 * 1024;
// One event is one datagram of a few hundred bytes; anything larger than this is
// not a conntrack event we could parse.
constexpr std::size_t kDatagramRoom = 64 * 1024;

std::string errno_text(int e) { return std::strerror(e); }

struct CtDeleter {
    void operator()(nf_conntrack* ct) const { nfct_destroy(ct); }
};
using CtPtr = std::unique_ptr<nf_conntrack, CtDeleter>;

bool has(const nf_conntrack* ct, nf_conntrack_attr a) { return nfct_attr_is_set(ct, a) > 0; }

std::uint16_t port(const nf_conntrack* ct, nf_conntrack_attr a) {
    return has(ct, a) ? ntohs(nfct_get_attr_u16(ct, a)) : 0;  // the library keeps ports in network order
}

// libnetfilter_conntrack 1.0.9 (Debian 12) checks each attribute's type as it parses an
// event, and on one that fails it calls exit() (__abi_breakage in parse_mnl.c), so a
// single malformed message would end the daemon. Every attribute set it checks is
// checked here first, with the same types (and strings it strdup()s must end in their
// NUL), and a message that fails is skipped instead.
struct CtRule {
    int type;
    mnl_attr_data_type as;
    std::size_t len = 0;  // exact length for a binary; 0: the type's own
    const struct CtSet* nested = nullptr;
};
struct CtSet {
    int max;
    std::initializer_list<CtRule> rules;
};
const CtSet kCtIp{CTA_IP_MAX,
                  {{CTA_IP_V4_SRC, MNL_TYPE_U32}, {CTA_IP_V4_DST, MNL_TYPE_U32},
                   {CTA_IP_V6_SRC, MNL_TYPE_BINARY, 16}, {CTA_IP_V6_DST, MNL_TYPE_BINARY, 16}}};
const CtSet kCtProto{CTA_PROTO_MAX,
                     {{CTA_PROTO_NUM, MNL_TYPE_U8},
                      {CTA_PROTO_SRC_PORT, MNL_TYPE_U16},
                      {CTA_PROTO_DST_PORT, MNL_TYPE_U16},
                      {CTA_PROTO_ICMP_ID, MNL_TYPE_U16},
                      {CTA_PROTO_ICMP_TYPE, MNL_TYPE_U8},
                      {CTA_PROTO_ICMP_CODE, MNL_TYPE_U8},
                      {CTA_PROTO_ICMPV6_ID, MNL_TYPE_U16},
                      {CTA_PROTO_ICMPV6_TYPE, MNL_TYPE_U8},
                      {CTA_PROTO_ICMPV6_CODE, MNL_TYPE_U8}}};
const CtSet kCtTuple{CTA_TUPLE_MAX,
                     {{CTA_TUPLE_IP, MNL_TYPE_NESTED, 0, &kCtIp},
                      {CTA_TUPLE_PROTO, MNL_TYPE_NESTED, 0, &kCtProto},
                      {CTA_TUPLE_ZONE, MNL_TYPE_U16}}};
const CtSet kCtTcp{CTA_PROTOINFO_TCP_MAX,
                   {{CTA_PROTOINFO_TCP_STATE, MNL_TYPE_U8},
                    {CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, MNL_TYPE_U8},
                    {CTA_PROTOINFO_TCP_WSCALE_REPLY, MNL_TYPE_U8},
                    {CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, MNL_TYPE_BINARY, 2},
                    {CTA_PROTOINFO_TCP_FLAGS_REPLY, MNL_TYPE_BINARY, 2}}};
const CtSet kCtSctp{CTA_PROTOINFO_SCTP_MAX,
                    {{CTA_PROTOINFO_SCTP_STATE, MNL_TYPE_U8},
                     {CTA_PROTOINFO_SCTP_VTAG_ORIGINAL, MNL_TYPE_U32},
                     {CTA_PROTOINFO_SCTP_VTAG_REPLY, MNL_TYPE_U32}}};
const CtSet kCtDccp{CTA_PROTOINFO_DCCP_MAX,
                    {{CTA_PROTOINFO_DCCP_STATE, MNL_TYPE_U8},
                     {CTA_PROTOINFO_DCCP_ROLE, MNL_TYPE_U8},
                     {CTA_PROTOINFO_DCCP_HANDSHAKE_SEQ, MNL_TYPE_U64}}};
const CtSet kCtProtoinfo{CTA_PROTOINFO_MAX,
                         {{CTA_PROTOINFO_TCP, MNL_TYPE_NESTED, 0, &kCtTcp},
                          {CTA_PROTOINFO_SCTP, MNL_TYPE_NESTED, 0, &kCtSctp},
                          {CTA_PROTOINFO_DCCP, MNL_TYPE_NESTED, 0, &kCtDccp}}};
const CtSet kCtCounters{CTA_COUNTERS_MAX,
                        {{CTA_COUNTERS_PACKETS, MNL_TYPE_U64},
                         {CTA_COUNTERS_BYTES, MNL_TYPE_U64},
                         {CTA_COUNTERS32_PACKETS, MNL_TYPE_U32},
                         {CTA_COUNTERS32_BYTES, MNL_TYPE_U32}}};
const CtSet kCtNatSeq{CTA_NAT_SEQ_MAX,
                      {{CTA_NAT_SEQ_CORRECTION_POS, MNL_TYPE_U32},
                       {CTA_NAT_SEQ_OFFSET_BEFORE, MNL_TYPE_U32},
                       {CTA_NAT_SEQ_OFFSET_AFTER, MNL_TYPE_U32}}};
const CtSet kCtHelp{CTA_HELP_MAX, {{CTA_HELP_NAME, MNL_TYPE_NUL_STRING}}};
const CtSet kCtSecctx{CTA_SECCTX_MAX, {{CTA_SECCTX_NAME, MNL_TYPE_NUL_STRING}}};
const CtSet kCtTimestamp{CTA_TIMESTAMP_MAX,
                         {{CTA_TIMESTAMP_START, MNL_TYPE_U64}, {CTA_TIMESTAMP_STOP, MNL_TYPE_U64}}};
const CtSet kCtSynproxy{CTA_SYNPROXY_MAX,
                        {{CTA_SYNPROXY_ISN, MNL_TYPE_U32}, {CTA_SYNPROXY_ITS, MNL_TYPE_U32},
                         {CTA_SYNPROXY_TSOFF, MNL_TYPE_U32}}};
const CtSet kCtTop{CTA_MAX,
                   {{CTA_TUPLE_ORIG, MNL_TYPE_NESTED, 0, &kCtTuple},
                    {CTA_TUPLE_REPLY, MNL_TYPE_NESTED, 0, &kCtTuple},
                    {CTA_TUPLE_MASTER, MNL_TYPE_NESTED, 0, &kCtTuple},
                    {CTA_NAT_SEQ_ADJ_ORIG, MNL_TYPE_NESTED, 0, &kCtNatSeq},
                    {CTA_NAT_SEQ_ADJ_REPLY, MNL_TYPE_NESTED, 0, &kCtNatSeq},
                    {CTA_PROTOINFO, MNL_TYPE_NESTED, 0, &kCtProtoinfo},
                    {CTA_COUNTERS_ORIG, MNL_TYPE_NESTED, 0, &kCtCounters},
                    {CTA_COUNTERS_REPLY, MNL_TYPE_NESTED, 0, &kCtCounters},
                    {CTA_HELP, MNL_TYPE_NESTED, 0, &kCtHelp},
                    {CTA_SECCTX, MNL_TYPE_NESTED, 0, &kCtSecctx},
                    {CTA_TIMESTAMP, MNL_TYPE_NESTED, 0, &kCtTimestamp},
                    {CTA_SYNPROXY, MNL_TYPE_NESTED, 0, &kCtSynproxy},
                    {CTA_STATUS, MNL_TYPE_U32},
                    {CTA_TIMEOUT, MNL_TYPE_U32},
                    {CTA_MARK, MNL_TYPE_U32},
                    {CTA_SECMARK, MNL_TYPE_U32},
                    {CTA_USE, MNL_TYPE_U32},
                    {CTA_ID, MNL_TYPE_U32},
                    {CTA_ZONE, MNL_TYPE_U16}}};

// Whether every attribute in [data, data + len) that `set` names is of its type, nests
// included (at most a few levels: the sets above are a tree).
bool ct_attrs_valid(const void* data, std::size_t len, const CtSet& set) {
    const auto* a = static_cast<const nlattr*>(data);
    int left = static_cast<int>(len);
    while (mnl_attr_ok(a, left)) {
        const int type = mnl_attr_get_type(a);
        for (const CtRule& r : set.rules) {
            if (r.type != type) continue;
            const int v = r.len ? mnl_attr_validate2(a, r.as, r.len) : mnl_attr_validate(a, r.as);
            if (v < 0) return false;
            if (r.nested && !ct_attrs_valid(mnl_attr_get_payload(a), mnl_attr_get_payload_len(a), *r.nested))
                return false;
            break;
        }
        left -= static_cast<int>(MNL_ALIGN(a->nla_len));
        a = mnl_attr_next(a);
    }
    return true;
}

}  // namespace

bool conntrack_message_valid(const nlmsghdr* nlh) {
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nfgenmsg)) return false;
    const auto* attrs = static_cast<const char*>(mnl_nlmsg_get_payload(nlh)) + sizeof(nfgenmsg);
    return ct_attrs_valid(attrs, mnl_nlmsg_get_payload_len(nlh) - sizeof(nfgenmsg), kCtTop);
}

namespace {

// The first attribute of `type` among the attributes in [data, data + len).
const nlattr* find_attr(const void* data, std::size_t len, std::uint16_t type) {
    auto* a = static_cast<const nlattr*>(data);
    int left = static_cast<int>(len);
    while (mnl_attr_ok(a, left)) {
        if (mnl_attr_get_type(a) == type) return a;
        left -= static_cast<int>(MNL_ALIGN(a->nla_len));
        a = mnl_attr_next(a);
    }
    return nullptr;
}

const nlattr* find_nested(const nlattr* nest, std::uint16_t type) {
    if (!nest || mnl_attr_validate(nest, MNL_TYPE_NESTED) < 0) return nullptr;
    return find_attr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), type);
}

// The ICMP / ICMPv6 echo identifier of the reply tuple, which NAT translates like a
// source port. libnetfilter_conntrack keeps a single ATTR_ICMP_ID (the original
// direction's), so this one is read from the message itself.
std::optional<std::uint16_t> reply_icmp_id(const nlmsghdr* nlh, std::uint8_t l4proto) {
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nfgenmsg)) return std::nullopt;
    const auto* attrs = static_cast<const char*>(mnl_nlmsg_get_payload(nlh)) + sizeof(nfgenmsg);
    const auto* reply = find_attr(attrs, mnl_nlmsg_get_payload_len(nlh) - sizeof(nfgenmsg), CTA_TUPLE_REPLY);
    const auto* proto = find_nested(reply, CTA_TUPLE_PROTO);
    const auto* id = find_nested(proto, l4proto == IPPROTO_ICMP ? CTA_PROTO_ICMP_ID : CTA_PROTO_ICMPV6_ID);
    if (!id || mnl_attr_validate(id, MNL_TYPE_U16) < 0) return std::nullopt;
    return ntohs(mnl_attr_get_u16(id));
}

// The entry, if `ct` is a complete IPv4/IPv6 connection of `zone`.
std::optional<ConntrackEntry> entry_of(const nf_conntrack* ct, const nlmsghdr* nlh, std::uint16_t zone) {
    // tc ct sets one zone for both directions (CTA_ZONE; absent for zone 0). A
    // per-direction zone (CTA_TUPLE_ZONE) is someone else's configuration.
    if (has(ct, ATTR_ORIG_ZONE) || has(ct, ATTR_REPL_ZONE)) return std::nullopt;
    const std::uint16_t z = has(ct, ATTR_ZONE) ? nfct_get_attr_u16(ct, ATTR_ZONE) : 0;
    if (z != zone || !has(ct, ATTR_ORIG_L3PROTO) || !has(ct, ATTR_ORIG_L4PROTO)) return std::nullopt;

    ConntrackEntry e;
    e.zone = z;
    e.l4proto = nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO);
    const auto l3 = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO);
    struct Addr {
        nf_conntrack_attr attr;
        IpAddress* out;
    };
    const Addr v4[] = {{ATTR_ORIG_IPV4_SRC, &e.orig_src}, {ATTR_ORIG_IPV4_DST, &e.orig_dst},
                       {ATTR_REPL_IPV4_SRC, &e.reply_src}, {ATTR_REPL_IPV4_DST, &e.reply_dst}};
    const Addr v6[] = {{ATTR_ORIG_IPV6_SRC, &e.orig_src}, {ATTR_ORIG_IPV6_DST, &e.orig_dst},
                       {ATTR_REPL_IPV6_SRC, &e.reply_src}, {ATTR_REPL_IPV6_DST, &e.reply_dst}};
    if (l3 != AF_INET && l3 != AF_INET6) return std::nullopt;
    const Family family = l3 == AF_INET ? Family::V4 : Family::V6;
    for (const auto& a : l3 == AF_INET ? v4 : v6) {
        if (!has(ct, a.attr)) return std::nullopt;  // an entry without both tuples counts nothing
        *a.out = IpAddress::from_bytes(family, nfct_get_attr(ct, a.attr));
    }
    if (e.l4proto == IPPROTO_ICMP || e.l4proto == IPPROTO_ICMPV6) {
        if (has(ct, ATTR_ICMP_ID)) e.orig_sport = ntohs(nfct_get_attr_u16(ct, ATTR_ICMP_ID));
        e.reply_dport = reply_icmp_id(nlh, e.l4proto).value_or(e.orig_sport);
    } else {
        e.orig_sport = port(ct, ATTR_ORIG_PORT_SRC);
        e.orig_dport = port(ct, ATTR_ORIG_PORT_DST);
        e.reply_sport = port(ct, ATTR_REPL_PORT_SRC);
        e.reply_dport = port(ct, ATTR_REPL_PORT_DST);
    }
    return e;
}

}  // namespace

bool take_datagram(const char* data, std::size_t size, std::uint16_t zone, std::vector<ConntrackEvent>& out) {
    int len = static_cast<int>(size);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(data); message_fits(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
        if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK) continue;
        ConntrackEvent::Kind kind;
        const auto type = NFNL_MSG_TYPE(nlh->nlmsg_type);
        if (type == IPCTNL_MSG_CT_DELETE)
            kind = ConntrackEvent::Kind::Destroy;
        else if (type == IPCTNL_MSG_CT_NEW && (nlh->nlmsg_flags & NLM_F_CREATE))
            kind = ConntrackEvent::Kind::New;
        else
            continue;  // an update: not subscribed, but harmless
        // nfct_nlmsg_parse() reads the nfgenmsg header without checking that the message
        // has room for one, and exit()s on an attribute not of its type: both checked first.
        if (!conntrack_message_valid(nlh)) {
            malformed(Malformed::Conntrack, "an event with an attribute not of its type (or shorter than "
                                            "its nfgenmsg header)");
            continue;
        }
        CtPtr ct(nfct_new());
        if (!ct) return false;
        if (nfct_nlmsg_parse(nlh, ct.get()) < 0) {
            // Skipped, not taken for an overrun: a stream of them must not become a
            // stream of dumps. The kernel sends none.
            malformed(Malformed::Conntrack, "an event libnetfilter_conntrack cannot parse");
            continue;
        }
        if (auto e = entry_of(ct.get(), nlh, zone)) out.push_back({kind, std::move(*e)});
    }
    return true;
}

Result<std::unique_ptr<ConntrackWatcher>> ConntrackWatcher::open(std::uint16_t zone) {
    // Subscribing binds the groups: from here on every NEW and DESTROY is queued, so
    // a dump taken after open() misses nothing. No UPDATE group: state changes do
    // not move a connection between chunks.
    nfct_handle* h = nfct_open(CONNTRACK, NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY);
    if (!h) return fail("cannot subscribe to conntrack events: " + errno_text(errno));
    std::unique_ptr<ConntrackWatcher> w(new ConntrackWatcher(h, zone));
    const int fd = nfct_fd(h);
    // SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN; SO_RCVBUF is the fallback.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kReceiveBuffer, sizeof kReceiveBuffer) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kReceiveBuffer, sizeof kReceiveBuffer);
    // NETLINK_BROADCAST_ERROR stays off on purpose: with it the kernel would hold
    // dying connections until their DESTROY reached us; an overrun and a dump are
    // the answer here instead.
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return fail("conntrack events: cannot make the socket non-blocking: " + errno_text(errno));
    return w;
}

ConntrackWatcher::~ConntrackWatcher() { nfct_close(events_); }

int ConntrackWatcher::fd() const { return nfct_fd(events_); }

Result<ConntrackWatcher::Batch> ConntrackWatcher::process() {
    Batch batch;
    std::vector<char> buf(kDatagramRoom);
    for (int messages = 0; messages < kMaxMessagesPerCall;) {
        sockaddr_nl peer{};
        iovec iov{buf.data(), buf.size()};
        msghdr msg{};
        msg.msg_name = &peer;
        msg.msg_namelen = sizeof peer;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        const ssize_t n = recvmsg(fd(), &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == ENOBUFS) {
                // The kernel dropped events for us; what is still queued is valid,
                // so keep reading, but the caller must dump to know the table.
                batch.overrun = true;
                continue;
            }
            return fail("conntrack events: " + errno_text(errno));
        }
        ++messages;
        // An event is only the kernel's (port id 0); a truncated one cannot be read,
        // which loses it as surely as an overrun does.
        if (peer.nl_pid != 0) continue;
        if (msg.msg_flags & MSG_TRUNC) {
            batch.overrun = true;
            continue;
        }
        if (!take_datagram(buf.data(), static_cast<std::size_t>(n), zone_, batch.events))
            return fail("conntrack events: out of memory");
    }
    return batch;
}

Result<std::vector<ConntrackEntry>> ConntrackWatcher::dump() {
    // A socket of its own: the event socket keeps queueing while the dump runs.
    nfct_handle* h = nfct_open(CONNTRACK, 0);
    if (!h) return fail("conntrack dump: cannot open ctnetlink: " + errno_text(errno));
    struct Context {
        std::uint16_t zone;
        std::vector<ConntrackEntry> entries;
    } ctx{zone_, {}};
    nfct_callback_register2(
        h, NFCT_T_ALL,
        [](const nlmsghdr* nlh, nf_conntrack_msg_type, nf_conntrack* ct, void* data) {
            auto* c = static_cast<Context*>(data);
            if (auto e = entry_of(ct, nlh, c->zone)) c->entries.push_back(std::move(*e));
            return static_cast<int>(NFCT_CB_CONTINUE);
        },
        &ctx);
    // Every family; the zone is filtered here: Linux 6.1 cannot filter a dump by
    // zone (CTA_ZONE in a dump request is honoured from 6.8 on).
    std::uint32_t family = AF_UNSPEC;
    const int r = nfct_query(h, NFCT_Q_DUMP, &family);
    const int err = errno;
    nfct_close(h);
    if (r < 0) return fail("conntrack dump: " + errno_text(err));
    return std::move(ctx.entries);
}

}  // namespace dpo::kernel

// SPDX-License-Identifier: GPL-2.0-or-later
#include "punt_port.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>


namespace dpo::kernel {

namespace {

// Bursts of first packets (many subscribers waking at once) wait here while the
// daemon installs rules; SO_RCVBUFFORCE passes rmem_max with CAP_NET_ADMIN.
constexpr int kReceiveBuffer = 4 * 1024 * 1024;

std::string errno_text(int e) { return std::strerror(e); }

using NlSock = std::unique_ptr<nl_sock, decltype(&nl_socket_free)>;
using Link = std::unique_ptr<rtnl_link, decltype(&rtnl_link_put)>;

Link no_link() { return Link(nullptr, &rtnl_link_put); }

// The device named `name`, or nullptr when there is none.
Result<Link> get_link(nl_sock* sk, const char* name) {
    rtnl_link* l = nullptr;
    const int err = rtnl_link_get_kernel(sk, 0, name, &l);
    if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return no_link();
    if (err < 0) return fail(std::string("link ") + name + ": " + nl_geterror(err));
    return Link(l, &rtnl_link_put);
}

Result<Done> create_pair(nl_sock* sk, unsigned mtu) {
    Link link(rtnl_link_veth_alloc(), &rtnl_link_put);  // put frees the peer too
    if (!link) return fail(std::string("veth: out of memory"));
    rtnl_link_set_name(link.get(), PuntPort::kPuntDev);
    rtnl_link_set_mtu(link.get(), mtu);
    rtnl_link* peer = rtnl_link_veth_get_peer(link.get());
    rtnl_link_set_name(peer, PuntPort::kInjectDev);
    rtnl_link_set_mtu(peer, mtu);
    rtnl_link_put(peer);  // the reference get_peer took
    // Created down: IPv6 goes off before the first chance to chatter.
    const int err = rtnl_link_add(sk, link.get(), NLM_F_CREATE | NLM_F_EXCL);
    if (err < 0 && err != -NLE_EXIST)  // a concurrent creator: adopt its pair
        return fail(std::string("create veth ") + PuntPort::kPuntDev + "/" + PuntPort::kInjectDev + ": " +
                    nl_geterror(err));
    return Done{};
}

// Router solicitations, MLD reports and DAD probes from dpo-inject would arrive at
// dpo-punt as if punted; from dpo-punt they would be handed to the uplink's ingress.
// Without IPv6 neither end sends anything on its own (no IPv4 address, no ARP).
Result<Done> disable_ipv6(const char* dev) {
    const std::string path = std::string("/proc/sys/net/ipv6/conf/") + dev + "/disable_ipv6";
    const int f = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (f < 0 && errno == ENOENT) return Done{};  // no IPv6 in this kernel: nothing to silence
    if (f < 0) return fail("disable IPv6 on " + std::string(dev) + ": " + errno_text(errno));
    const bool ok = ::write(f, "1\n", 2) == 2;
    const int e = errno;
    ::close(f);
    if (!ok) return fail("disable IPv6 on " + std::string(dev) + ": " + errno_text(e));
    return Done{};
}

// Up, with the uplink's MTU: a veth drops a frame longer than its peer's MTU (plus
// one tag), and AF_PACKET refuses to send one. Sends nothing when already so.
Result<Done> bring_up(nl_sock* sk, rtnl_link* l, unsigned mtu) {
    if ((rtnl_link_get_flags(l) & IFF_UP) && rtnl_link_get_mtu(l) == mtu) return Done{};
    Link change(rtnl_link_alloc(), &rtnl_link_put);
    if (!change) return fail(std::string("link change: out of memory"));
    rtnl_link_set_flags(change.get(), IFF_UP);
    rtnl_link_set_mtu(change.get(), mtu);
    if (int err = rtnl_link_change(sk, l, change.get(), 0); err < 0)
        return fail(std::string("set ") + rtnl_link_get_name(l) + " up: " + nl_geterror(err));
    return Done{};
}

struct Pair {
    int punt = 0;
    int inject = 0;
};

// Creates the pair, or adopts the one a previous run left; either way both ends
// up, without IPv6, with `mtu`.
Result<Pair> ensure_pair(nl_sock* sk, unsigned mtu) {
    auto punt = get_link(sk, PuntPort::kPuntDev);
    if (!punt) return fail(punt.error());
    if (!*punt) {
        if (auto c = create_pair(sk, mtu); !c) return fail(c.error());
        punt = get_link(sk, PuntPort::kPuntDev);
        if (!punt) return fail(punt.error());
        if (!*punt) return fail(std::string(PuntPort::kPuntDev) + " vanished after its creation");
    }
    auto inject = get_link(sk, PuntPort::kInjectDev);
    if (!inject) return fail(inject.error());
    // A device of these names that is not our pair belongs to somebody else: refuse
    // rather than punt into it.
    const char* kind = rtnl_link_get_type(punt->get());
    if (!kind || std::strcmp(kind, "veth") != 0 || !*inject ||
        rtnl_link_get_link(punt->get()) != rtnl_link_get_ifindex(inject->get()))
        return fail(std::string(PuntPort::kPuntDev) + " exists but is not a veth paired with " + PuntPort::kInjectDev);
    for (const char* dev : {PuntPort::kInjectDev, PuntPort::kPuntDev})
        if (auto d = disable_ipv6(dev); !d) return fail(d.error());
    for (rtnl_link* l : {inject->get(), punt->get()})
        if (auto u = bring_up(sk, l, mtu); !u) return fail(u.error());
    return Pair{rtnl_link_get_ifindex(punt->get()), rtnl_link_get_ifindex(inject->get())};
}

// A raw socket that reads what arrives at `ifindex` and nothing it sends itself.
Result<int> open_socket(int ifindex) {
    // Protocol 0 until bound: a socket opened with ETH_P_ALL would queue frames of
    // every device in the namespace between socket() and bind().
    const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail("packet socket: " + errno_text(errno));
    auto give_up = [fd](const std::string& what) {
        const int e = errno;
        ::close(fd);
        return fail(what + ": " + errno_text(e));
    };
    int on = 1;
    // The kernel keeps a received 802.1Q tag in skb metadata, not in the bytes: the
    // auxdata carries it, and receive() puts it back.
    if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &on, sizeof on) != 0) return give_up("PACKET_AUXDATA");
    // What the daemon writes back leaves through dpo-punt: never read it as punted.
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &on, sizeof on) != 0)
        return give_up("PACKET_IGNORE_OUTGOING");
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kReceiveBuffer, sizeof kReceiveBuffer) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kReceiveBuffer, sizeof kReceiveBuffer);
    sockaddr_ll at{};
    at.sll_family = AF_PACKET;
    at.sll_protocol = htons(ETH_P_ALL);
    at.sll_ifindex = ifindex;
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0)
        return give_up(std::string("bind to ") + PuntPort::kPuntDev);
    return fd;
}

}  // namespace

Result<bool> PuntPort::remove() {
    NlSock sk(nl_socket_alloc(), &nl_socket_free);
    if (!sk) return fail(std::string("rtnetlink: out of memory"));
    if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0)
        return fail(std::string("rtnetlink: ") + nl_geterror(err));
    auto punt = get_link(sk.get(), kPuntDev);
    if (!punt) return fail(punt.error());
    if (!*punt) return false;
    if (const char* type = rtnl_link_get_type(punt->get()); !type || std::strcmp(type, "veth") != 0)
        return fail(std::string(kPuntDev) + " is not a veth device: not ours, left alone");
    // Deleting one end of a veth pair deletes its peer; the qdiscs and rules go with them.
    if (int err = rtnl_link_delete(sk.get(), punt->get()); err < 0)
        return fail(std::string("delete ") + kPuntDev + ": " + nl_geterror(err));
    return true;
}

Result<std::unique_ptr<PuntPort>> PuntPort::open(const std::string& uplink) {
    NlSock sk(nl_socket_alloc(), &nl_socket_free);
    if (!sk) return fail(std::string("rtnetlink: out of memory"));
    if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0)
        return fail(std::string("rtnetlink: ") + nl_geterror(err));
    auto up = get_link(sk.get(), uplink.c_str());
    if (!up) return fail(up.error());
    if (!*up) return fail("no device " + uplink);

    auto pair = ensure_pair(sk.get(), rtnl_link_get_mtu(up->get()));
    if (!pair) return fail(pair.error());
    // The socket exists before the rules: nothing the uplink punts can miss it.
    auto fd = open_socket(pair->punt);
    if (!fd) return fail(fd.error());
    std::unique_ptr<PuntPort> port(new PuntPort(*fd, pair->punt, pair->inject));

    // The pair's rules (the way back on dpo-inject, the drop on dpo-punt) are the
    // program's (the compiler's Punt key): the one tc writer installs them.
    return port;
}

PuntPort::~PuntPort() { ::close(fd_); }

Result<std::vector<std::vector<std::uint8_t>>> PuntPort::receive() {
    std::vector<std::vector<std::uint8_t>> out;
    // Each frame is read 4 bytes into rx_, so putting a tag back moves only the two
    // MAC addresses.
    std::uint8_t* const at = rx_.data() + 4;
    const std::size_t room = rx_.size() - 4;
    while (out.size() < kMaxBatch) {
        sockaddr_ll from{};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
        iovec iov{at, room};
        msghdr msg{};
        msg.msg_name = &from;
        msg.msg_namelen = sizeof from;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd_, &msg, MSG_TRUNC);
        if (n < 0) {
            if (errno == EINTR) continue;
            // ENETDOWN: the device went down; the socket rebinds when it comes back.
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENETDOWN) break;
            if (!out.empty()) break;  // hand over what was read; the error comes back
            return fail("punt socket: " + errno_text(errno));
        }
        const auto len = static_cast<std::size_t>(n);
        if (len > room) {  // MSG_TRUNC reports the real length
            ++truncated_;
            continue;
        }
        if (from.sll_pkttype == PACKET_OUTGOING || len < ETH_HLEN) continue;
        const tpacket_auxdata* aux = nullptr;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA &&
                c->cmsg_len >= CMSG_LEN(sizeof(tpacket_auxdata)))
                aux = reinterpret_cast<const tpacket_auxdata*>(CMSG_DATA(c));
        if (aux && (aux->tp_status & TP_STATUS_VLAN_VALID)) {
            const std::uint16_t tpid = (aux->tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux->tp_vlan_tpid : ETH_P_8021Q;
            std::uint8_t* frame = at - 4;
            std::memmove(frame, at, 2 * ETH_ALEN);
            const std::uint16_t tag[2] = {htons(tpid), htons(aux->tp_vlan_tci)};
            std::memcpy(frame + 2 * ETH_ALEN, tag, sizeof tag);
            out.emplace_back(frame, at + len);
        } else {
            out.emplace_back(at, at + len);
        }
    }
    return out;
}

Result<Done> PuntPort::reinject(const std::vector<std::uint8_t>& frame) {
    if (frame.size() < ETH_HLEN) return fail("re-inject: " + std::to_string(frame.size()) + "-byte frame");
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = punt_ifindex_;
    // The frame's own ethertype (0x8100 when tagged) becomes skb->protocol.
    std::memcpy(&to.sll_protocol, frame.data() + 2 * ETH_ALEN, 2);
    to.sll_halen = ETH_ALEN;
    std::memcpy(to.sll_addr, frame.data(), ETH_ALEN);
    for (;;) {
        const ssize_t n =
            ::sendto(fd_, frame.data(), frame.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail("re-inject: " + errno_text(errno));
        if (static_cast<std::size_t>(n) != frame.size()) return fail(std::string("re-inject: short write"));
        return Done{};
    }
}

Result<std::uint32_t> PuntPort::take_lost() {
    tpacket_stats st{};
    socklen_t len = sizeof st;
    // The kernel resets the counters on read.
    if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) != 0)
        return fail("PACKET_STATISTICS: " + errno_text(errno));
    const std::uint32_t lost = st.tp_drops + truncated_;
    truncated_ = 0;
    return lost;
}

}  // namespace dpo::kernel

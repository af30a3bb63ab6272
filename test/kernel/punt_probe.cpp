// SPDX-License-Identifier: GPL-2.0-or-later
// Run by the lab (scenario punt_path): opens the daemon's PuntPort for an uplink and
// then does what the scenario asks on stdin, one command a line, answering on stdout:
//
//   (start)                 READY punt_dev=D punt_ifindex=N, after PASS|FAIL lines on the
//                           pair's two rules (installed here as the daemon's engine does,
//                           where missing) and on the pair and its rules surviving a reopen
//   expect N SECONDS        waits (poll, deadline) for N punted frames and holds them:
//                           FRAME i len=.. vlan=.. ... hex=.., then GOT n
//   quiet SECONDS           counts punted frames arriving within the window: QUIET n
//   reinject                puts every held frame back: REINJECTED i since_receive_us=..
//                           call_us=.., then DONE n
//   bounce K                with the punt rule still in place, re-injects the first held
//                           frame K times, each time waiting for it to be punted again:
//                           BOUNCE k=.. identical=.. cycle_us=median/p90/max ...
//   serve SRC VID SECONDS   the daemon's path: waits for one punted frame, installs an
//                           owned `vlan_id VID src_ip SRC/32 -> gact ok` rule on the
//                           uplink's chain 0 ahead of the punt rule, re-injects:
//                           SERVED install_us=.. reinject_us=.. total_us=..
//   quit
//
//   punt-probe UPLINK
#include <net/if.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/compile/compiler.hpp"
#include "kernel/punt_port.hpp"
#include "kernel/tc_netlink.hpp"

using namespace dpo;
using Clock = std::chrono::steady_clock;
using Frame = std::vector<std::uint8_t>;

namespace {

double us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

std::string hex(const Frame& f) {
    std::string s;
    char b[3];
    for (auto c : f) {
        std::snprintf(b, sizeof b, "%02x", c);
        s += b;
    }
    return s;
}

std::string mac(const std::uint8_t* p) {
    char b[18];
    std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", p[0], p[1], p[2], p[3], p[4], p[5]);
    return b;
}

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }

// A few fields for people; the scenario checks the hex.
std::string describe(const Frame& f) {
    std::ostringstream o;
    o << "len=" << f.size() << " dst=" << mac(f.data()) << " src=" << mac(f.data() + 6);
    std::size_t off = 12;
    std::uint16_t type = be16(f.data() + off);
    if (type == 0x8100 || type == 0x88a8) {
        o << " vlan=" << (be16(f.data() + off + 2) & 0xfff);
        off += 4;
        type = be16(f.data() + off);
    } else {
        o << " vlan=none";
    }
    char t[8];
    std::snprintf(t, sizeof t, "%04x", type);
    o << " ethertype=" << t;
    off += 2;
    if (type == 0x0800 && f.size() >= off + 20) {
        const std::uint8_t* ip = f.data() + off;
        o << " ip=" << +ip[12] << "." << +ip[13] << "." << +ip[14] << "." << +ip[15] << ">" << +ip[16] << "."
          << +ip[17] << "." << +ip[18] << "." << +ip[19] << " proto=" << +ip[9];
        const std::size_t ihl = (ip[0] & 0xf) * 4u;
        if (ip[9] == 17 && f.size() >= off + ihl + 8)
            o << " udp=" << be16(ip + ihl) << ">" << be16(ip + ihl + 2)
              << " payload=" << (f.size() - off - ihl - 8);
    }
    return o.str();
}

// Frames punted within `seconds`, until `want` of them (0: the whole window).
std::vector<std::pair<Frame, Clock::time_point>> wait_frames(kernel::PuntPort& port, std::size_t want, double seconds,
                                                             std::string& error) {
    std::vector<std::pair<Frame, Clock::time_point>> got;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    for (;;) {
        auto r = port.receive();
        if (!r) {
            error = r.error();
            return got;
        }
        const auto at = Clock::now();
        for (auto& f : *r) got.emplace_back(std::move(f), at);
        if (want && got.size() >= want) return got;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return got;
        pollfd p{port.fd(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(left));
    }
}

const tc::Installed* find(const std::vector<tc::Installed>& rules, const tc::Rule& want) {
    for (const auto& i : rules)
        if (i.owned && i.decoded && i.rule == want) return &i;
    return nullptr;
}

tc::Rule expected(const char* dev, tc::Action a) {
    tc::Rule r;
    r.dev = dev;
    r.prio = 1;
    r.protocol = tc::kEthAll;
    r.actions = {std::move(a)};
    return r;
}

struct Stats {
    double median = 0, p90 = 0, max = 0;
};
Stats stats(std::vector<double> v) {
    Stats s;
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    s.median = v[v.size() / 2];
    s.p90 = v[std::min(v.size() - 1, v.size() * 9 / 10)];
    s.max = v.back();
    return s;
}

void check(bool ok, const std::string& what, const std::string& detail) {
    std::printf("%s %s: %s\n", ok ? "PASS" : "FAIL", what.c_str(), detail.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (argc != 2) {
        std::fprintf(stderr, "usage: punt-probe UPLINK\n");
        return 2;
    }
    const std::string uplink = argv[1];
    const int uplink_ifindex = static_cast<int>(if_nametoindex(uplink.c_str()));
    auto port = kernel::PuntPort::open(uplink);
    if (!port) {
        std::printf("FAIL open: %s\n", port.error().c_str());
        return 1;
    }
    auto tcnl = kernel::TcNetlink::open();
    if (!tcnl) {
        std::printf("FAIL tc: %s\n", tcnl.error().c_str());
        return 1;
    }

    // The pair's rules belong to the program: the daemon's engine installs them. The
    // probe does what it would, where they are missing.
    const auto back = compile::reinject_vlan_rule(kernel::PuntPort::kInjectDev, uplink, uplink_ifindex);
    const auto sink = expected(kernel::PuntPort::kPuntDev, tc::Drop{});
    std::uint32_t next_handle = 0x80000000u;
    for (const auto* want : {&back, &sink}) {
        auto dump = (*tcnl)->dump(want->dev);
        if (dump && find(*dump, *want)) continue;
        if (auto q = (*tcnl)->ensure_clsact(want->dev); !q) {
            std::printf("FAIL clsact on %s: %s\n", want->dev.c_str(), q.error().c_str());
            return 1;
        }
        program::Change add;
        add.kind = program::Change::Kind::Add;
        add.ifindex = static_cast<int>(if_nametoindex(want->dev.c_str()));
        add.rule = *want;
        add.handle = next_handle++;
        const auto r = (*tcnl)->apply({add}).results.at(0);
        if (r.error || r.lost) {
            std::printf("FAIL rule on %s: %s (%s)\n", want->dev.c_str(), std::strerror(r.error), r.extack.c_str());
            return 1;
        }
    }
    std::uint32_t handles[2] = {};
    int i = 0;
    for (const auto* want : {&back, &sink}) {
        auto dump = (*tcnl)->dump(want->dev);
        const auto* got = dump ? find(*dump, *want) : nullptr;
        check(got, "rule `" + tc::to_tc_command(*want).substr(std::strlen("tc filter add dev ")) + "`",
              got ? "installed, owned, dumped back identical" : "not found among " + std::to_string(dump ? dump->size() : 0) +
                                                                      " rule(s)");
        handles[i++] = got ? got->handle : 0;
    }
    // A restart adopts what the last run left: same devices, same rules, same handles.
    const int punt_ifindex = (*port)->punt_ifindex();
    port = fail(std::string("closed"));
    port = kernel::PuntPort::open(uplink);
    if (!port) {
        std::printf("FAIL reopen: %s\n", port.error().c_str());
        return 1;
    }
    bool same = (*port)->punt_ifindex() == punt_ifindex;
    i = 0;
    for (const auto* want : {&back, &sink}) {
        auto dump = (*tcnl)->dump(want->dev);
        const auto* got = dump ? find(*dump, *want) : nullptr;
        same = same && got && got->handle == handles[i++] && dump->size() == 1;
    }
    check(same, "reopen adopts the pair and its rules", same ? "same ifindex, same rule handles, nothing added"
                                                             : "devices or rules changed on reopen");
    auto& p = **port;
    std::printf("READY punt_dev=%s punt_ifindex=%d\n", p.punt_dev().c_str(), p.punt_ifindex());

    std::vector<std::pair<Frame, Clock::time_point>> held;
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string cmd;
        in >> cmd;
        std::string error;
        if (cmd == "expect") {
            std::size_t n = 0;
            double s = 0;
            in >> n >> s;
            auto got = wait_frames(p, n, s, error);
            for (auto& g : got) {
                std::printf("FRAME %zu %s hex=%s\n", held.size(), describe(g.first).c_str(), hex(g.first).c_str());
                held.push_back(std::move(g));
            }
            std::printf("GOT %zu%s%s\n", got.size(), error.empty() ? "" : " error=", error.c_str());
        } else if (cmd == "quiet") {
            double s = 0;
            in >> s;
            auto got = wait_frames(p, 0, s, error);
            for (auto& g : got) std::printf("UNEXPECTED %s\n", describe(g.first).c_str());
            std::printf("QUIET %zu\n", got.size());
        } else if (cmd == "reinject") {
            std::size_t done = 0;
            for (std::size_t k = 0; k < held.size(); ++k) {
                const auto t0 = Clock::now();
                auto r = p.reinject(held[k].first);
                const auto t1 = Clock::now();
                if (!r) {
                    std::printf("REINJECT-FAILED %zu %s\n", k, r.error().c_str());
                    continue;
                }
                ++done;
                std::printf("REINJECTED %zu since_receive_us=%.1f call_us=%.1f\n", k, us(t1 - held[k].second),
                            us(t1 - t0));
            }
            held.clear();
            std::printf("DONE %zu\n", done);
        } else if (cmd == "bounce") {
            std::size_t k = 0;
            in >> k;
            if (held.empty()) {
                std::printf("BOUNCE error=no-frame-held\n");
                continue;
            }
            const Frame frame = held.front().first;
            std::vector<double> cycle, call;
            std::size_t identical = 0, back_count = 0;
            for (std::size_t n = 0; n < k; ++n) {
                const auto t0 = Clock::now();
                if (auto r = p.reinject(frame); !r) {
                    error = r.error();
                    break;
                }
                const auto t1 = Clock::now();
                auto got = wait_frames(p, 1, 5.0, error);
                if (got.empty()) break;
                ++back_count;
                identical += got.size() == 1 && got[0].first == frame;
                cycle.push_back(us(got[0].second - t0));  // write -> punted again -> read
                call.push_back(us(t1 - t0));
            }
            held.clear();
            const auto c = stats(cycle), w = stats(call);
            std::printf("BOUNCE k=%zu back=%zu identical=%zu cycle_us=%.1f/%.1f/%.1f call_us=%.1f/%.1f/%.1f%s%s\n", k,
                        back_count, identical, c.median, c.p90, c.max, w.median, w.p90, w.max,
                        error.empty() ? "" : " error=", error.c_str());
        } else if (cmd == "serve") {
            std::string src;
            unsigned vid = 0;
            double s = 0;
            in >> src >> vid >> s;
            auto got = wait_frames(p, 1, s, error);
            if (got.empty()) {
                std::printf("SERVED error=no-frame %s\n", error.c_str());
                continue;
            }
            const auto t0 = got[0].second;
            // Stands in for the subscriber's commit rule: ahead of the punt rule, so the
            // re-injected frame is not punted again.
            tc::Rule r;
            r.dev = uplink;
            r.chain = 0;
            r.prio = 5;
            r.protocol = tc::kEth8021Q;
            r.match.vlan_id = static_cast<std::uint16_t>(vid);
            r.match.vlan_ethtype = tc::kEthIpv4;
            r.match.src_ip = *IpPrefix::parse(src + "/32");
            r.actions = {tc::Pass{}};
            program::Change add;
            add.kind = program::Change::Kind::Add;
            add.ifindex = uplink_ifindex;
            add.rule = r;
            add.handle = next_handle++;
            const auto report = (*tcnl)->apply({add});
            const std::size_t refused = report.results.at(0).error ? 1 : 0;
            const auto t1 = Clock::now();
            auto ri = p.reinject(got[0].first);
            const auto t2 = Clock::now();
            std::printf("SERVED %s install_us=%.1f reinject_us=%.1f total_us=%.1f refused=%zu%s%s\n",
                        describe(got[0].first).c_str(), us(t1 - t0), us(t2 - t1), us(t2 - t0), refused,
                        ri ? "" : " error=", ri ? "" : ri.error().c_str());
        } else if (cmd == "lost") {
            auto l = p.take_lost();
            std::printf("LOST %u\n", l ? *l : 0xffffffffu);
        } else if (cmd == "quit") {
            break;
        } else {
            std::printf("UNKNOWN %s\n", line.c_str());
        }
    }
    return 0;
}

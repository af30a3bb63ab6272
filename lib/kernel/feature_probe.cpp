// SPDX-License-Identifier: GPL-2.0-or-later
#include "feature_probe.hpp"

#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include "core/log.hpp"
#include "kernel/tc_codec.hpp"

namespace dpo::kernel {

namespace {

using features::Answer;
using features::Feature;
using features::Finding;

// Where the probe filter sits (feature_probe.hpp): a chain no goto can lead to from
// the daemon's rules, the last prio, one handle.
constexpr std::uint32_t kProbeChain = 0x0FFFFFFF;
constexpr std::uint16_t kProbePrio = 0xffff;
constexpr std::uint32_t kProbeHandle = 1;
// The kernel answers while sendto() runs; this only bounds a wait that cannot end.
constexpr int kAnswerTimeoutSeconds = 10;

bool module_loaded(const char* module) {
    struct stat st {};
    return stat((std::string("/sys/module/") + module).c_str(), &st) == 0;
}

struct Reply {
    int error = 0;  // positive errno; 0: accepted
    std::string extack;
};

// One netlink socket that sends one request at a time and reads its ack.
class Asker {
public:
    static std::optional<Asker> open(int bus, int& error) {
        mnl_socket* s = mnl_socket_open(bus);
        if (!s || mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
            error = errno;
            if (s) mnl_socket_close(s);
            return std::nullopt;
        }
        int on = 1;
        mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &on, sizeof on);
        mnl_socket_setsockopt(s, NETLINK_CAP_ACK, &on, sizeof on);
        timeval timeout{kAnswerTimeoutSeconds, 0};
        setsockopt(mnl_socket_get_fd(s), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        return Asker(s);
    }
    Asker(Asker&& o) noexcept : sock_(std::exchange(o.sock_, nullptr)), seq_(o.seq_) {}
    Asker(const Asker&) = delete;
    ~Asker() {
        if (sock_) mnl_socket_close(sock_);
    }

    Reply ask(nlmsghdr* nlh, std::size_t& messages) {
        nlh->nlmsg_flags |= NLM_F_ACK;
        nlh->nlmsg_seq = ++seq_;
        ++messages;
        if (mnl_socket_sendto(sock_, nlh, nlh->nlmsg_len) < 0) return {errno, "send failed"};
        std::vector<char> rx(MNL_SOCKET_BUFFER_SIZE);
        for (;;) {
            const ssize_t n = mnl_socket_recvfrom(sock_, rx.data(), rx.size());
            if (n < 0) return {errno, "no answer"};
            int len = static_cast<int>(n);
            for (auto* m = reinterpret_cast<const nlmsghdr*>(rx.data()); message_fits(m, len);
                 m = mnl_nlmsg_next(m, &len)) {
                // Echoes and the stats answer come before the ack: only the ack says.
                if (m->nlmsg_seq != seq_ || m->nlmsg_type != NLMSG_ERROR) continue;
                if (m->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) return {EBADMSG, "short ack"};
                const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m));
                return {-err->error, err->error ? extack_of(m) : ""};
            }
        }
    }

private:
    explicit Asker(mnl_socket* s) : sock_(s) {}

    mnl_socket* sock_;
    std::uint32_t seq_ = 0;
};

// The probe filter: nothing reaches it, and it would match nothing that did.
tc::Rule probe_rule(std::optional<tc::Action> action) {
    tc::Rule r;
    r.chain = kProbeChain;
    r.prio = kProbePrio;
    r.protocol = tc::kEthAll;
    r.match.dst_mac = Mac{};  // 00:00:00:00:00:00: no frame is sent there
    if (action) r.actions = {std::move(*action)};
    return r;
}

// One action of the kind `f` names, in the shape the rules use where that is cheap.
tc::Action probe_action(Feature f, int ifindex, const std::string& dev, std::uint16_t zone) {
    switch (f) {
        case Feature::Mirred: return tc::Redirect{ifindex, dev, 0, false};  // index 0: the kernel's, freed with it
        case Feature::Pedit: {
            tc::Rewrite rw;
            rw.dec_ttl = true;
            return rw;
        }
        case Feature::Csum: return tc::CsumIp4h{};
        case Feature::Vlan: return tc::VlanPop{};
        case Feature::Ct: return tc::Ct{zone, false, true, false, std::nullopt};  // ct zone Z nat: needs NAT built in
        case Feature::TunnelKey: return tc::TunnelUnset{};
        case Feature::Police: return tc::Police{1000, 100};  // the punt rule's shape: a packet rate
        default: return tc::Pass{};  // gact
    }
}

nlmsghdr* put_del_clsact(void* buf, int ifindex) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_DELQDISC;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    auto* t = static_cast<tcmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(tcmsg)));
    t->tcm_family = AF_UNSPEC;
    t->tcm_ifindex = ifindex;
    t->tcm_parent = TC_H_CLSACT;
    t->tcm_handle = TC_H_MAKE(TC_H_CLSACT, 0);
    mnl_attr_put_strz(nlh, TCA_KIND, "clsact");
    return nlh;
}

nlmsghdr* put_ct_stats(void* buf) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = 0;
    return nlh;
}

Finding finding(Feature f, const Reply& r) { return {f, features::classify(f, r.error), r.error, r.extack}; }

// The tc features of `ask` (in features::all() order: clsact, flower, actions) on `dev`.
void probe_tc(const std::vector<Feature>& ask, const std::string& uplink, std::uint16_t zone, ProbeReport& out) {
    auto unknown = [&](std::size_t from, const Reply& why) {
        for (std::size_t i = from; i < ask.size(); ++i) out.findings.push_back({ask[i], Answer::Unknown, why.error, why.extack});
    };
    std::string dev = uplink;
    int ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
    if (!ifindex) {  // the uplink may come later: lo is always there
        dev = "lo";
        ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
    }
    int error = 0;
    auto asker = Asker::open(NETLINK_ROUTE, error);
    if (!ifindex || !asker) return unknown(0, {ifindex ? error : ENODEV, ifindex ? "cannot open rtnetlink" : "no lo"});
    out.device = dev;
    std::vector<char> buf(kMessageRoom);

    // A clsact to hold the filter, whether or not its module is in question.
    const Reply q = asker->ask(put_new_clsact(buf.data(), ifindex), out.messages);
    const bool made_clsact = q.error == 0;
    if (q.error && q.error != EEXIST) {
        // Without a clsact nothing else can be asked: clsact is the one missing, or unknown.
        const bool asked = ask.front() == Feature::Clsact;
        if (asked) out.findings.push_back(finding(Feature::Clsact, q));
        return unknown(asked ? 1 : 0, {q.error, "no clsact qdisc to probe with" + (q.extack.empty() ? "" : ": " + q.extack)});
    }
    std::size_t i = 0;
    if (ask.front() == Feature::Clsact) {
        out.findings.push_back({Feature::Clsact, Answer::Present, 0, ""});
        ++i;
    }

    bool core_missing = false;
    if (i < ask.size()) {
        // The filter alone: flower. EEXIST is a probe filter an earlier run left
        // (killed between two messages): flower is there, and it is replaced below.
        Reply fl = asker->ask(put_new_filter(buf.data(), probe_rule(std::nullopt), ifindex, kProbeHandle,
                                             FilterOp::Create, TCA_CLS_FLAGS_SKIP_HW),
                              out.messages);
        if (fl.error == EEXIST) fl = {};
        if (ask[i] == Feature::Flower) {
            out.findings.push_back(finding(Feature::Flower, fl));
            ++i;
        }
        if (fl.error) {
            core_missing = features::classify(Feature::Flower, fl.error) == Answer::Missing;
            unknown(i, {fl.error, "no flower filter to probe with" + (fl.extack.empty() ? "" : ": " + fl.extack)});
        } else {
            // The same filter with one action of each kind, one message per kind.
            for (; i < ask.size(); ++i) {
                const Reply a = asker->ask(put_new_filter(buf.data(), probe_rule(probe_action(ask[i], ifindex, dev, zone)),
                                                          ifindex, kProbeHandle, FilterOp::Replace, TCA_CLS_FLAGS_SKIP_HW),
                                           out.messages);
                out.findings.push_back(finding(ask[i], a));
                core_missing = core_missing || (out.findings.back().answer == Answer::Missing &&
                                                features::spec(ask[i]).stage == features::Stage::Core);
            }
            (void)asker->ask(put_del_filter(buf.data(), {ifindex, kProbeChain, kProbePrio, tc::kEthAll, kProbeHandle}),
                             out.messages);
        }
    }
    // Leave the kernel as found where the daemon will not use what the probe made.
    if (made_clsact && (dev != uplink || core_missing)) (void)asker->ask(put_del_clsact(buf.data(), ifindex), out.messages);
}

Finding probe_ctnetlink(ProbeReport& out) {
    int error = 0;
    auto asker = Asker::open(NETLINK_NETFILTER, error);
    if (!asker) return {Feature::Ctnetlink, features::classify(Feature::Ctnetlink, error), error, "no NETLINK_NETFILTER"};
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    return finding(Feature::Ctnetlink, asker->ask(put_ct_stats(buf.data()), out.messages));
}

std::string errno_name(int e) { return e ? std::strerror(e) : ""; }

}  // namespace

ProbeReport probe_features(const std::vector<Feature>& wanted, const std::string& uplink, std::uint16_t ct_zone) {
    ProbeReport out;
    std::vector<Feature> tc;  // in features::all() order
    bool ctnetlink = false;
    for (Feature f : features::all()) {
        if (std::find(wanted.begin(), wanted.end(), f) == wanted.end()) continue;
        if (module_loaded(features::spec(f).module)) {
            out.findings.push_back({f, Answer::Present, 0, ""});
            ++out.loaded;
        } else if (f == Feature::Ctnetlink) {
            ctnetlink = true;
        } else {
            tc.push_back(f);
        }
    }
    if (!tc.empty()) probe_tc(tc, uplink, ct_zone, out);
    if (ctnetlink) out.findings.push_back(probe_ctnetlink(out));
    return out;
}

bool KernelFeatures::check(const Mapping& m) {
    std::vector<Feature> wanted;
    for (Feature f : features::needed(m))
        if (std::none_of(findings_.begin(), findings_.end(), [f](const Finding& x) { return x.feature == f; }))
            wanted.push_back(f);
    if (wanted.empty()) return !verdict_.refuse;
    const ProbeReport r = probe_features(wanted, m.uplink, m.nat ? m.nat->zone : 0);
    std::size_t missing = 0;
    std::map<std::pair<int, std::string>, std::pair<std::string, std::string>> unknown;  // why -> features, modules
    for (const auto& f : r.findings) {
        const auto& s = features::spec(f.feature);
        if (f.answer == Answer::Missing) {
            ++missing;
            log::write(s.stage == features::Stage::Core ? log::Level::Error : log::Level::Warning,
                       "kernel-feature-missing",
                       {{"feature", s.name}, {"module", s.module}, {"effect", features::effect(f.feature)},
                        {"error", errno_name(f.error)}, {"extack", f.extack}});
        } else if (f.answer == Answer::Unknown) {
            auto& [names, modules] = unknown[{f.error, f.extack}];
            names += (names.empty() ? "" : ",") + std::string(s.name);
            modules += (modules.empty() ? "" : ",") + std::string(s.module);
        }
        findings_.push_back(f);
    }
    // One line per reason: after a failed flower filter every action is unknown alike.
    for (const auto& [why, what] : unknown)
        log::warning("kernel-feature-unknown", {{"feature", what.first},
                                                {"module", what.second},
                                                {"error", errno_name(why.first)},
                                                {"extack", why.second},
                                                {"effect", "assumed there: a rule that needs it will say"}});
    verdict_ = features::decide(findings_);
    log::info("kernel-features", {{"checked", std::to_string(r.findings.size())},
                                  {"loaded", std::to_string(r.loaded)},
                                  {"probed", std::to_string(r.findings.size() - r.loaded)},
                                  {"messages", std::to_string(r.messages)},
                                  {"device", r.device.empty() ? "none" : r.device},
                                  {"missing", std::to_string(missing)}});
    if (verdict_.refuse) {
        std::string lacks;
        for (Feature f : verdict_.missing)
            if (features::spec(f).stage == features::Stage::Core) lacks += (lacks.empty() ? "" : ", ") + std::string(features::spec(f).module);
        log::error("startup-refused", {{"reason", "the kernel lacks " + lacks + ", which every rule needs"},
                                       {"effect", "no rule installed; load the module(s) and start again"}});
    }
    return !verdict_.refuse;
}

}  // namespace dpo::kernel

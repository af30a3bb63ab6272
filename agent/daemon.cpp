// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon.hpp"

#include <net/if.h>

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <future>
#include <optional>
#include <set>
#include <vector>

#include "core/compile/compiler.hpp"
#include "core/engine/engine.hpp"
#include "core/log.hpp"
#include "core/mapping_loader.hpp"
#include "core/text.hpp"
#include "kernel/action_stats.hpp"
#include "kernel/feature_probe.hpp"
#include "kernel/punt_port.hpp"
#include "kernel/rtnl_watcher.hpp"
#include "kernel/tc_netlink.hpp"
#include "chunk_record_file.hpp"
#include "control_commands.hpp"
#include "control_server.hpp"
#include "metrics.hpp"
#include "ipfix_exporter.hpp"
#include "nat_runtime.hpp"
#include "service_notify.hpp"

namespace dpo::agent {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;

void log_problems(const Problems& problems) {
    for (const auto& p : problems)
        log::error("config-problem", {{"file", p.file}, {"path", p.path}, {"reason", p.reason}});
}

std::string n(std::size_t v) { return std::to_string(v); }

std::optional<Clock::time_point> earliest(std::optional<Clock::time_point> a, std::optional<Clock::time_point> b) {
    if (a && b) return std::min(*a, *b);
    return a ? a : b;
}

// A key for the content hashes only this process knows (tc/hash.hpp).
tc::HashKey random_hash_key() {
    tc::HashKey k = tc::kDefaultHashKey;
    (void)!getrandom(k.data(), sizeof k, 0);
    return k;
}

class Daemon {
public:
    Daemon(std::string file, Mapping m, const Options& o, kernel::TcNetlink& tc, kernel::RtnlWatcher& watcher,
           kernel::KernelFeatures& features, Metrics& metrics)
        : file_(std::move(file)), tc_(tc), watcher_(watcher), features_(features), metrics_(metrics),
          engine_(features.admit(std::move(m)), tc, engine_options(o)) {
        status_.version = o.version;
        status_.started = std::chrono::system_clock::now();
        status_.started_mono = Clock::now();
        status_.mapping_file = file_;
        status_.mapping_loaded = status_.started;
        status_.nat_state = nat_state();
    }

    // The control socket and the chunk-event record; neither is needed to run (a
    // daemon that cannot have them says so and keeps the fast path).
    bool open_control(const Options& o) {
        if (!o.state_dir.empty() && engine_.mapping().nat) open_record(o.state_dir);
        state_dir_ = o.state_dir;
        if (o.control_socket.empty()) return true;
        auto c = ControlServer::open(o.control_socket);
        if (!c) {
            log::error("control-socket-failed", {{"reason", c.error()}});
            // Another daemon answers there: two owners of the same rules would fight.
            return c.error().find("another dpoffloadd") == std::string::npos;
        }
        control_ = std::move(*c);
        return true;
    }

    int run(int sfd) {
        const auto now = Clock::now();
        for (const auto& d : compile::rule_devices(engine_.mapping()))
            if (!if_nametoindex(d.c_str())) log::warning("device-missing", {{"dev", d}, {"effect", "no rules until it appears"}});
        engine_.start(watcher_.state(), now);
        metrics_.mapping(engine_.mapping());
        ipfix_.configure(nat_logging(engine_.mapping()), IpfixExporter::wall_ms());
        maybe_start_nat(now);
        for (;;) {
            const auto t = Clock::now();
            const auto due = engine_.next_due(t);
            if (due && *due <= t) flush(t);
            metrics_.refresh(engine_, nat_.get(), Clock::now());
            notify_.tick(Clock::now(), [this] { return status_line(); });
            int timeout = -1;
            // The engine's next pass, the metrics' next refresh or systemd's next watchdog
            // ping or status, whichever comes first.
            if (const auto next = earliest(earliest(engine_.next_due(Clock::now()), metrics_.due()), notify_.next_due())) {
                const auto wait = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
                timeout = static_cast<int>(std::clamp<long long>(wait, 0, 60000));
            }
            if (rtnl_more_) timeout = 0;  // events are waiting still: read them after a look around
            NatRuntime* nat = nat_.get();
            std::vector<pollfd> fds = {{sfd, POLLIN, 0},
                                       {watcher_.fd(), POLLIN, 0},  // a resync opens a new socket: ask every time
                                       {tc_.event_fd(), POLLIN, 0},
                                       {nat ? nat->punt_fd() : -1, POLLIN, 0},
                                       {nat ? nat->conntrack_fd() : -1, POLLIN, 0},
                                       {nat ? nat->timer_fd() : -1, POLLIN, 0},
                                       {reload_.parsing.valid() ? reload_.done_fd : -1, POLLIN, 0}};
            fds.push_back({counting_.reading.valid() ? counting_.done_fd : -1, POLLIN, 0});
            constexpr std::size_t kControl = 8;
            if (control_) {
                control_->poll_fds(fds);
                if (const auto d = control_->next_deadline()) {
                    const auto wait =
                        std::chrono::ceil<std::chrono::milliseconds>(*d - Clock::now()).count() + 1;
                    const int w = static_cast<int>(std::clamp<long long>(wait, 0, 60000));
                    timeout = timeout < 0 ? w : std::min(timeout, w);
                }
            }
            if (poll(fds.data(), fds.size(), timeout) < 0) {
                if (errno == EINTR) continue;
                log::error("poll-failed", {{"reason", std::strerror(errno)}});
                return kExitFailure;
            }
            const auto now2 = Clock::now();
            // First packets first: they are served (urgent lane) before anything else is read.
            if (nat && fds[3].revents) {
                const auto changed = nat->on_punt();
                engine_.subscribers(changed, true, now2);
                if (!changed.empty()) flush(now2);
                // Nothing new to install (a second packet of a subscriber whose rule
                // is in, or on its way): its frames go back now or never.
                else if (nat->waiting()) reinject();
            }
            if ((fds[1].revents || rtnl_more_) && !kernel_events(now2)) return kExitFailure;
            if (fds[2].revents) {
                const auto others = tc_.poll_events();
                metrics_.tc_events(others);
                engine_.tc_events(others, now2);
            }
            if (nat && nat_.get() == nat) {
                if (fds[4].revents) engine_.subscribers(nat->on_conntrack(), false, now2);
                if (fds[5].revents) {
                    engine_.subscribers(nat->on_timer(), false, now2);
                    if (record_) record_->sync();
                }
            }
            if (fds[6].revents) reloaded(Clock::now());
            if (fds[7].revents) counted();
            if (control_)
                for (auto& r : control_->ready(fds.data() + kControl, fds.size() - kControl, Clock::now()))
                    control(r);
            if (fds[0].revents) {
                signalfd_siginfo si{};
                if (read(sfd, &si, sizeof si) != static_cast<ssize_t>(sizeof si)) continue;
                if (si.ssi_signo == SIGHUP) {
                    reload();
                    continue;
                }
                if (si.ssi_signo == SIGUSR1) {  // an operator asks: compare with a full dump now
                    engine_.request_audit("signal");  // the loop's next turn runs it
                    continue;
                }
                // SIGTERM/SIGINT: the rules stay, so a restart does not interrupt traffic.
                log::notice("stopping", {{"signal", strsignal(static_cast<int>(si.ssi_signo))}, {"rules", "left in place"}});
                notify_.stopping("stopping: rules left in place");
                return kExitOk;
            }
        }
    }

private:
    static std::optional<NatLogging> nat_logging(const Mapping& m) { return m.nat ? m.nat->logging : std::nullopt; }

    static engine::Options engine_options(const Options& o) {
        engine::Options e;
        e.audit_every = o.audit_interval;
        e.hash_key = random_hash_key();
        e.seed = e.hash_key[0];
        return e;
    }

    // Everything rtnetlink has for us; false when its socket failed for good.
    bool kernel_events(Clock::time_point now) {
        auto p = watcher_.process();
        if (!p) {
            log::error("events-failed", {{"reason", p.error()}});
            return false;
        }
        rtnl_more_ = p->more;
        if (p->resync) {
            ++status_.overruns;
            metrics_.overrun("rtnetlink");
            log::warning("resync", {{"reason", "netlink overrun (ENOBUFS): events lost, state dumped again"}});
            engine_.kernel_resync(*p->resync, now);
        }
        bool punt_gone = false;
        for (const auto& e : p->events) {
            if (const auto* l = std::get_if<model::LinkEvent>(&e); l && !l->link && nat_ &&
                (l->ifindex == nat_->punt_ifindex() || !if_nametoindex(nat_->punt_sink_dev().c_str())))
                punt_gone = true;
            metrics_.kernel_event(e);
            engine_.kernel(e, now);
        }
        // The punt pair deleted under a running NAT stage (by hand, by a --flush): start
        // the stage again, which makes the pair again.
        if (punt_gone || (p->resync && nat_ && !if_nametoindex(nat_->punt_dev().c_str()))) {
            log::warning("nat-punt-pair-gone", {{"dev", nat_->punt_dev()}, {"effect", "NAT stage restarted"}});
            stop_nat(now);
        }
        maybe_start_nat(now);
        return true;
    }

    // The NAT stage runs when the mapping has a `nat` section and the uplink exists;
    // without it, or while it cannot start, inner -> outer IPv4 is left to the kernel.
    void maybe_start_nat(Clock::time_point now) {
        const Mapping& m = engine_.mapping();
        if (!m.nat || nat_ || !features_.nat()) return;  // no act_ct / ctnetlink: said at start
        // The uplink may appear after the daemon started (or be re-created): try once
        // per uplink ifindex, not on every event.
        const Link* up = engine_.model().link_named(m.uplink);
        if (!up || up->ifindex == nat_tried_ifindex_) return;
        nat_tried_ifindex_ = up->ifindex;
        auto rt = NatRuntime::open(m);
        if (!rt) {
            log::error("nat-not-running", {{"reason", rt.error()}, {"effect", "inner -> outer IPv4 left to the kernel"}});
            return;
        }
        nat_ = std::move(*rt);
        // The record first: it is what `nat who` answers from, and it must not miss
        // what the journal has.
        nat_->on_chunk_events = [this](const std::vector<nat::ChunkEvent>& events, std::int64_t unix_ms) {
            if (!record_) return;
            std::vector<nat::RecordEntry> entries;
            entries.reserve(events.size());
            for (const auto& e : events) entries.push_back(nat::record_of(e, unix_ms));
            record_->append(entries);
        };
        nat_->report_to(metrics_);
        nat_->export_to(&ipfix_);
        engine_.nat_stage(nat_.get(), now);
        engine_.subscribers(nat_->take_changed(), false, now);
        log::notice("nat-running", {{"zone", std::to_string(m.nat->zone)}});
        status_.nat_state = nat_state();
    }

    std::string nat_state() const {
        const Mapping& m = engine_.mapping();
        if (!m.nat) return "off: the mapping has no nat section";
        if (nat_) return "running";
        if (!features_.nat()) return "off: the kernel lacks what NAT needs (see kernel-feature-missing)";
        if (!engine_.model().link_named(m.uplink)) return "waiting for the uplink " + m.uplink;
        return "not running (see nat-not-running in the log)";
    }

    void open_record(const std::string& dir) {
        if (record_) return;
        auto r = ChunkRecordFile::open(dir);
        if (!r) {
            log::error("nat-record-failed", {{"reason", r.error()},
                                             {"effect", "nat who cannot answer; the journal lines remain"}});
            return;
        }
        record_ = std::move(*r);
        log::info("nat-record", {{"file", record_->path()}, {"bytes", std::to_string(record_->bytes())}});
    }

    void stop_nat(Clock::time_point now) {
        engine_.nat_stage(nullptr, now);
        nat_.reset();
        nat_tried_ifindex_ = 0;
        status_.nat_state = nat_state();
    }

    void reinject() {
        nat_->reinject_waiting([this](const IpAddress& sub) { return engine_.in_step(compile::SubscriberKey{sub}); });
    }

    void flush(Clock::time_point now) {
        const auto t0 = Clock::now();
        const engine::Pass p = engine_.flush(now);
        const auto took = Clock::now() - t0;
        engine_.observe(p, took);
        metrics_.pass(p, took);
        const double ms = std::chrono::duration<double, std::milli>(took).count();
        note_pass(p, ms);
        // First packets go back only now that their subscriber's rule is in.
        if (p.urgent && nat_ && nat_->waiting()) reinject();
        log_pass(p, ms);
        // Ready once the start pass has put the rules in: `systemctl start` returns then.
        if (p.start) notify_.ready(status_line(), Clock::now());
        else if (p.did_work()) notify_.changed();
    }

    // systemd's STATUS=: what `systemctl status` shows on one line.
    std::string status_line() const {
        const auto c = engine_.counts();
        std::string s = "rules " + n(c.rules) + " (in_hw " + n(c.in_hw) + ", not_in_hw " + n(c.not_in_hw) +
                        ", refused " + n(c.refused) + "); routes " +
                        n(engine_.model().table(engine_.mapping().route_table).size());
        if (nat_) s += "; NAT " + n(nat_->subscribers().size()) + " subscribers";
        else if (engine_.mapping().nat) s += "; NAT not running";
        if (status_.last_audit)
            s += "; last audit " + utc_time(status_.last_audit->at) + " drift " + n(status_.last_audit->drift);
        if (!last_reload_.empty()) s += "; " + last_reload_;
        return s;
    }

    static std::string utc_time(std::chrono::system_clock::time_point t) {
        const std::time_t tt = std::chrono::system_clock::to_time_t(t);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        char buf[16];
        std::strftime(buf, sizeof buf, "%H:%M:%SZ", &tm);
        return buf;
    }

    void log_pass(const engine::Pass& p, double ms) {
        for (const auto& r : p.refused)
            log::error("rule-refused", {{"rule", r.rule}, {"error", std::strerror(r.error)}, {"extack", r.extack}});
        for (const auto& why : p.problems) log::warning("tc-problem", {{"reason", why}});
        if (p.lost)
            log::warning("acks-lost", {{"messages", n(p.lost)}, {"effect", "an audit reads back what happened"}});
        if (p.audit) {
            const auto level = p.drift ? log::Level::Notice : log::Level::Info;
            log::write(level, "audit", {{"reason", p.audit_reason}, {"dumps", n(p.dumps)}, {"drift", n(p.drift)}});
        }
        if (!p.did_work()) return;
        const auto c = engine_.counts();
        const auto changed = p.added + p.replaced;
        log::info("reconciled", {{"rules", n(c.rules)},
                                 {"kept", n(c.rules > changed ? c.rules - changed : 0)},
                                 {"added", n(p.added)},
                                 {"replaced", n(p.replaced)},
                                 {"deleted", n(p.deleted)},
                                 {"refused", n(p.refused.size())},
                                 {"messages", n(p.messages)},
                                 {"repointed", n(p.repointed)},
                                 {"in_hw", n(c.in_hw)},
                                 {"not_in_hw", n(c.not_in_hw)},
                                 {"routes", n(engine_.model().table(engine_.mapping().route_table).size())},
                                 {"neighbours", n(engine_.model().neighbour_count())},
                                 {"lane", p.start ? "start" : p.urgent ? "urgent" : "bulk"},
                                 {"keys", n(p.keys)},
                                 {"dumps", n(p.dumps)},
                                 {"queued", n(c.queued)},
                                 {"ms", std::to_string(static_cast<long>(ms))}});
    }

    void note_pass(const engine::Pass& p, double ms) {
        const auto wall = std::chrono::system_clock::now();
        if (p.audit) {
            ++status_.audits;
            status_.last_audit = DaemonStatus::Audit{wall, ms, p.audit_reason, p.drift, p.dumps};
            // Who asked for an audit hears what it found.
            for (const auto id : std::exchange(audits_asked_, {}))
                control_->answer(id, {{"reason", p.audit_reason}, {"dumps", p.dumps}, {"drift", p.drift},
                                      {"restored", p.restored}, {"ms", ms}});
        }
        if (p.start) status_.ready = true;
        if (!p.did_work()) return;
        ++status_.reconciles;
        status_.last_reconcile = DaemonStatus::Pass{wall, ms, p.start ? "start" : p.urgent ? "urgent" : "bulk",
                                                    p.keys, p.messages, p.added, p.replaced, p.deleted,
                                                    p.refused.size()};
    }

    void control(const ControlServer::Request& r) {
        const ControlContext c{engine_, nat_.get(), record_.get(), status_, tc_};
        Result<nlohmann::json> answer = nlohmann::json();
        if (r.command == "status") answer = control_status(c);
        else if (r.command == "rules") answer = control_rules(c, r.args);
        else if (r.command == "explain") answer = control_explain(c, r.args);
        else if (r.command == "nat") answer = control_nat(c, r.args);
        else if (r.command == "counters") {
            count(r.id);
            return;
        }
        else if (r.command == "audit" || r.command == "reload") {
            if (!r.privileged) {
                control_->refuse(r.id, r.command + " changes the daemon's state: root only (uid " +
                                           std::to_string(r.uid) + " may only look)");
                return;
            }
            log::notice("control", {{"command", r.command}, {"uid", std::to_string(r.uid)}});
            if (r.command == "audit") {
                engine_.request_audit("control");  // the loop's next turn runs it
                audits_asked_.push_back(r.id);
            } else {
                reloads_asked_.push_back(r.id);
                reload();
            }
            return;
        } else {
            control_->refuse(r.id, "unknown command " + printable(r.command) +
                                       " (status, rules, explain, counters, nat, audit, reload)");
            return;
        }
        if (answer) control_->answer(r.id, *answer);
        else control_->refuse(r.id, answer.error());
    }

    // The named counters: a dump of every gact and mirred action, O(rules) in the kernel,
    // read on a thread of its own (a socket of its own) so the loop goes on meanwhile.
    // Questions that come while one is read share its answer.
    void count(std::uint64_t id) {
        counting_.asked.push_back(id);
        if (counting_.reading.valid()) return;
        if (counting_.done_fd < 0) counting_.done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        const int fd = counting_.done_fd;
        counting_.reading = std::async(std::launch::async, [m = engine_.mapping(), fd] {
            auto r = kernel::counters(m);
            const std::uint64_t one = 1;
            if (fd >= 0) (void)!write(fd, &one, sizeof one);
            return r;
        });
        if (fd < 0) counted();  // no eventfd: wait for it here
    }

    void counted() {
        std::uint64_t n = 0;
        if (counting_.done_fd >= 0) (void)!read(counting_.done_fd, &n, sizeof n);
        auto r = counting_.reading.get();
        nlohmann::json answer;
        if (r) {
            nlohmann::json list = nlohmann::json::array();
            for (const auto& c : *r) {
                nlohmann::json x = {{"kind", c.kind},       {"name", c.name},   {"index", c.index},
                                    {"packets", c.packets}, {"bytes", c.bytes}, {"device", c.device},
                                    {"detail", c.detail}};
                if (c.hw_packets) x["hw_packets"] = *c.hw_packets;
                if (c.hw_bytes) x["hw_bytes"] = *c.hw_bytes;
                list.push_back(std::move(x));
            }
            answer = {{"counters", std::move(list)}};
        }
        for (const auto id : std::exchange(counting_.asked, {})) {
            if (r) control_->answer(id, answer);
            else control_->refuse(id, "reading the counters: " + r.error());
        }
    }

    // The file is read and checked on a thread of its own, so that the loop goes on
    // serving events meanwhile: the checks are linear in the file and bounded (4 MiB,
    // 32 levels), but a big file still takes a few hundred ms. A SIGHUP while one is
    // read is kept and read after it (the file may have changed again).
    void reload() {
        if (reload_.parsing.valid()) {
            reload_.again = true;
            return;
        }
        notify_.reloading("reloading " + printable(file_));
        if (reload_.done_fd < 0) reload_.done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (reload_.done_fd < 0) {  // no thread to tell us: read it here
            reload_.parsing = std::async(std::launch::deferred, load_mapping, file_);
            reloaded(Clock::now());
            return;
        }
        reload_.parsing = std::async(std::launch::async, [file = file_, fd = reload_.done_fd] {
            auto r = load_mapping(file);
            const std::uint64_t one = 1;
            (void)!write(fd, &one, sizeof one);
            return r;
        });
    }

    void reloaded(Clock::time_point now) {
        std::uint64_t count = 0;
        if (reload_.done_fd >= 0) (void)!read(reload_.done_fd, &count, sizeof count);
        auto next = reload_.parsing.get();  // ready: the thread wrote done_fd last
        const bool again = std::exchange(reload_.again, false);
        apply(std::move(next), now);
        // After the verdict, so systemd sees RELOADING=1 and READY=1 in pairs.
        if (again) reload();
    }

    void apply(Result<Mapping, Problems> next, Clock::time_point now) {
        if (!next) {
            log_problems(next.error());
            log::error("reload-refused", {{"file", file_}, {"kept", "running configuration"}});
            ++status_.reloads_refused;
            nlohmann::json problems = nlohmann::json::array();
            for (const auto& p : next.error()) problems.push_back(p.str());
            for (const auto id : std::exchange(reloads_asked_, {}))
                control_->refuse(id, file_ + ": refused, " + std::to_string(next.error().size()) +
                                         " problem(s); the running configuration stays",
                                 problems);
            const auto k = next.error().size();
            last_reload_ = "reload refused " + utc_time(std::chrono::system_clock::now()) + ": " + n(k) + " problem" +
                           (k == 1 ? "" : "s") + ", running configuration kept";
            notify_.reload_done(status_line(), Clock::now());
            return;
        }
        const Mapping& before = engine_.mapping();
        const bool nat_changed = !same_nat_stage(before.nat, next->nat) || before.uplink != next->uplink;
        const bool nat_gone = nat_changed && !next->nat;
        if (nat_changed && nat_) stop_nat(now);
        nat_tried_ifindex_ = 0;
        (void)features_.check(*next);  // a stage the start did not need: its features now
        engine_.reload(features_.admit(std::move(next).value()), now);
        metrics_.mapping(engine_.mapping());
        ipfix_.configure(nat_logging(engine_.mapping()), IpfixExporter::wall_ms());
        log::notice("reloaded", {{"file", file_}, {"interfaces", std::to_string(engine_.mapping().interfaces.size())}});
        ++status_.reloads;
        status_.mapping_loaded = std::chrono::system_clock::now();
        if (engine_.mapping().nat && !state_dir_.empty()) open_record(state_dir_);
        for (const auto id : std::exchange(reloads_asked_, {}))
            control_->answer(id, {{"file", file_}, {"interfaces", engine_.mapping().interfaces.size()}, {"accepted", true}});
        last_reload_ = "reloaded " + utc_time(std::chrono::system_clock::now()) + ": " +
                       n(engine_.mapping().interfaces.size()) + " interfaces";
        // Without `nat` any more, nothing punts: the rules that used it go, then the pair.
        if (nat_gone) {
            // Now, not after the bulk lane's quiet time: the pair goes right after.
            for (int i = 0; i < 1000; ++i) {
                const auto due = engine_.next_due(now);
                if (!due || *due > now + std::chrono::seconds(1)) break;
                now = std::max(now, *due);
                flush(now);
            }
            if (auto removed = kernel::PuntPort::remove(); !removed)
                log::warning("nat-punt-pair-left", {{"reason", removed.error()}});
            else if (*removed)
                log::notice("nat-stopped", {{"punt_pair", "deleted"}});
        }
        maybe_start_nat(now);
        status_.nat_state = nat_state();
        notify_.reload_done(status_line(), Clock::now());
    }

    std::string file_;
    kernel::TcNetlink& tc_;
    kernel::RtnlWatcher& watcher_;
    kernel::KernelFeatures& features_;
    Metrics& metrics_;
    engine::Engine engine_;
    IpfixExporter ipfix_;  // before nat_, which points to it
    std::unique_ptr<NatRuntime> nat_;
    int nat_tried_ifindex_ = 0;
    bool rtnl_more_ = false;
    DaemonStatus status_;
    std::unique_ptr<ChunkRecordFile> record_;
    std::string state_dir_;
    std::unique_ptr<ControlServer> control_;
    std::vector<std::uint64_t> audits_asked_, reloads_asked_;  // control requests answered later
    struct Counting {
        std::future<Result<std::vector<kernel::Counter>>> reading;  // valid while a dump runs
        int done_fd = -1;
        std::vector<std::uint64_t> asked;
        ~Counting() {
            if (reading.valid()) reading.wait();
            if (done_fd >= 0) close(done_fd);
        }
    } counting_;
    ServiceNotify notify_{Clock::now()};
    std::string last_reload_;  // the last reload's verdict, kept in the status line
    struct Reload {
        std::future<Result<Mapping, Problems>> parsing;  // valid while a file is read
        int done_fd = -1;                                // written when it is
        bool again = false;                              // a SIGHUP came meanwhile
        ~Reload() {
            if (parsing.valid()) parsing.wait();
            if (done_fd >= 0) close(done_fd);
        }
    } reload_;
};

}  // namespace

int run(const std::string& file, const Options& options) {
    auto loaded = load_mapping(file);
    if (!loaded) {
        log_problems(loaded.error());
        log::error("config-refused", {{"file", file}, {"problems", std::to_string(loaded.error().size())}});
        return kExitFailure;
    }

    // Before anything else touches tc (and before the daemon listens to it): the modules
    // the rules need, once; a missing core one refuses the start (kernel/feature_probe.hpp).
    kernel::KernelFeatures features;
    if (!features.check(*loaded)) return kExitFailure;

    // Signals arrive as readable events, so handling them is ordinary code.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) {
        log::error("startup-failed", {{"reason", std::string("sigprocmask: ") + std::strerror(errno)}});
        return kExitFailure;
    }
    const int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        log::error("startup-failed", {{"reason", std::string("signalfd: ") + std::strerror(errno)}});
        return kExitFailure;
    }
    // tc first: it listens before the kernel state is dumped, so nothing another process
    // does to our rules falls between the two.
    auto tc = kernel::TcNetlink::open(true);
    if (!tc) {
        log::error("startup-failed", {{"reason", tc.error()}});
        return kExitFailure;
    }
    auto watcher = kernel::RtnlWatcher::open(options.netlink_rcvbuf);
    if (!watcher) {
        log::error("startup-failed", {{"reason", watcher.error()}});
        return kExitFailure;
    }
    std::unique_ptr<Metrics> metrics;
    if (!options.metrics.empty()) {
        auto served = serve_metrics(options.metrics);
        if (!served) {
            log::error("startup-failed", {{"reason", served.error()}});
            return kExitFailure;
        }
        metrics = std::move(*served);
        log::notice("metrics", {{"listen", options.metrics}, {"path", "/metrics"}});
    }
    Daemon daemon(file, std::move(loaded).value(), options, **tc, **watcher, features,
                  metrics ? *metrics : Metrics::none());
    if (!daemon.open_control(options)) return kExitFailure;
    log::notice("started", {{"file", file}});
    const int rc = daemon.run(sfd);
    close(sfd);
    return rc;
}

int flush(const std::string& file) {
    auto m = load_mapping(file);
    if (!m) {
        log_problems(m.error());
        return kExitFailure;
    }
    auto tc = kernel::TcNetlink::open();
    if (!tc) {
        log::error("flush-failed", {{"reason", tc.error()}});
        return kExitFailure;
    }
    // Every rule of ours on the mapping's devices (a device that does not exist holds
    // none); the punt pair's go with the pair.
    std::vector<program::Change> deletes;
    for (const auto& dev : compile::rule_devices(*m)) {
        const int ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
        if (!ifindex) continue;
        auto installed = (*tc)->dump(dev);
        if (!installed) {
            log::error("flush-failed", {{"reason", installed.error()}});
            return kExitFailure;
        }
        for (const auto& i : *installed) {
            if (!i.owned) continue;
            deletes.push_back(program::Change::deletion(ifindex, i.rule, i.handle));
        }
    }
    const auto applied = (*tc)->apply(deletes);
    std::size_t deleted = 0, refused = 0;
    for (std::size_t i = 0; i < deletes.size(); ++i) {
        const auto v = program::classify(deletes[i].kind, applied.results[i]);
        if (v == program::Verdict::Done) ++deleted;
        else {
            ++refused;
            log::error("rule-refused", {{"rule", deletes[i].rule.key()},
                                        {"error", std::strerror(applied.results[i].error)},
                                        {"extack", applied.results[i].extack}});
        }
    }
    bool ok = refused == 0;
    std::string punt_pair = "none";
    if (auto removed = kernel::PuntPort::remove(); !removed) {
        log::error("flush-failed", {{"reason", removed.error()}});
        ok = false;
    } else if (*removed) {
        punt_pair = "deleted";
    }
    log::notice("flushed", {{"deleted", n(deleted)}, {"refused", n(refused)}, {"nat_punt_pair", punt_pair}});
    return ok ? kExitOk : kExitFailure;
}

}  // namespace dpo::agent

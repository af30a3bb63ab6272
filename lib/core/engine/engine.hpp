// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The incremental engine: every event costs what it changes.
//
//   watch    typed events (a link, an address, a route, a neighbour, a subscriber, what
//            another process did to tc) go in through the methods below and only mark
//            what they touch: the model is updated in place, the keys that read what
//            changed (watchers.hpp) are queued.
//   compile  flush() recompiles the queued keys (compile/keys.hpp) and compares each
//            rule's content hash with what the kernel has.
//   program  the differences go to the one tc writer (program/backend.hpp) at handles
//            the engine chose; its answers (echo and ack) update the installed set. No
//            dump: the engine knows where its rules are and what they hold.
//
// Two lanes. The urgent lane (a NAT subscriber's first packet) is served whole at the
// next flush, before anything else. The bulk lane (routes, neighbours, links, chunk
// releases, retries, foreign changes) waits until changes stop for `quiet` (or for
// `max_delay` since the first), then goes in slices of at most `slice_keys` keys, so a
// first packet is served between slices of a burst.
//
// Audits (full dumps) happen only at start, after a notification overrun, when one of
// the devices appears again, on reload, on request and periodically (jittered): drift
// is counted and repaired like any other change. The engine is pure: it does no I/O but
// through the backend, and reads no clock (the caller passes the time).

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/compile/adjacency.hpp"
#include "core/compile/compiler.hpp"
#include "core/compile/facts.hpp"
#include "core/compile/keys.hpp"
#include "core/compile/pipeline.hpp"
#include "core/compile/view.hpp"
#include "core/engine/watchers.hpp"
#include "core/mapping.hpp"
#include "core/model/kernel_model.hpp"
#include "core/nat/state.hpp"
#include "core/program/backend.hpp"
#include "core/program/verdict.hpp"
#include "core/tc/hash.hpp"

namespace dpo::engine {

using Time = std::chrono::steady_clock::time_point;
using std::chrono::milliseconds;

struct Options {
    milliseconds quiet{5};          // the bulk lane waits for changes to stop this long...
    milliseconds max_delay{100};    // ...but never longer than this after the first
    std::size_t slice_keys = 4096;     // keys per bulk slice
    // A first packet waits for one bulk slice at most: a slice holds as many kernel
    // changes as fit in `slice_time` at the cost the caller observed (observe()), within
    // these bounds (a slice ends at the first key past its size).
    milliseconds slice_time{20};
    std::size_t slice_changes_min = 16;
    std::size_t slice_changes = 2048;
    std::size_t start_slice_changes = 4096;  // per batch of a first start, which nothing waits for
    milliseconds retry_first{200};  // a retryable refusal is tried again after this, doubling...
    milliseconds retry_max{30000};  // ...up to this
    std::chrono::seconds audit_every{600};  // periodic audit; 0: none
    double audit_jitter = 0.2;      // +- this fraction, so a fleet does not dump in step
    std::uint64_t seed = 1;         // for the jitter
    tc::HashKey hash_key = tc::kDefaultHashKey;
};

// One permanent refusal, reported once (until the rule's content changes).
struct Refusal {
    std::string rule;  // the rule's key, as text
    int error = 0;
    std::string extack;
};

// What one flush did.
struct Pass {
    bool start = false;    // the first pass: everything compiled, strays swept
    bool urgent = false;   // the urgent lane
    bool audit = false;    // an audit ran (devices dumped)
    std::string audit_reason;
    std::size_t keys = 0;  // keys compiled
    std::size_t added = 0, replaced = 0, deleted = 0, repointed = 0;
    std::size_t messages = 0;  // changes sent to the kernel
    std::size_t retried = 0;   // changes that met a passing refusal (tried again later)
    std::size_t lost = 0;      // changes without an answer (an audit follows)
    std::size_t dumps = 0;     // device dumps
    std::size_t drift = 0;     // what the audit found different from the installed set
    std::size_t restored = 0;  // rules others deleted or changed, put back in this pass
    std::vector<Refusal> refused;  // new permanent refusals
    std::vector<std::string> problems;  // I/O failures (a dump, a clsact qdisc)
    bool did_work() const { return start || audit || keys || messages; }
};

struct Counts {
    std::size_t rules = 0;      // desired
    std::size_t installed = 0;  // ours, as the kernel has them
    std::size_t in_hw = 0, not_in_hw = 0;
    std::size_t refused = 0;    // desired but refused by the kernel
    std::size_t keys = 0;
    std::size_t watchers = 0;   // reverse-index edges
    std::size_t adjacencies = 0;
    std::size_t queued = 0;     // keys waiting
};

// One rule as an operator sees it (the control socket's `rules` and `explain`).
struct RuleView {
    const tc::Identity* identity = nullptr;
    std::optional<compile::Key> owner;  // the key that wants it; nothing: ours, going
    std::uint32_t handle = 0;           // where the kernel has it (0: not installed)
    bool wanted = false, installed = false, in_step = false;  // in_step: installed as wanted
    bool in_hw = false, not_in_hw = false;
    const Refusal* refusal = nullptr;   // the kernel refused it for good: why
};

// What one key makes now, for `explain`: compiled afresh (nothing changes in the
// engine), with each rule's `why` and state, and what the key leaves to the kernel.
struct KeyReport {
    compile::Key key;
    bool known = false;   // the engine has this key (else: compiled only for the answer)
    bool queued = false;  // changes of it wait for the next flush
    std::vector<std::pair<tc::Rule, RuleView>> rules;
    std::vector<std::string> notes;
};

// One device's rules by state (an operator's question, a metrics scrape).
struct DeviceCounts {
    std::size_t desired = 0, installed = 0, in_hw = 0, not_in_hw = 0, refused = 0;
    bool operator==(const DeviceCounts&) const = default;
};

class Engine {
public:
    Engine(Mapping m, program::Backend& tc, Options o = {});
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // ---- inputs: each records what changed; flush() does the work
    // The first snapshot. The next flush audits (adopting the rules a previous run left),
    // compiles every key and sweeps what nobody claimed.
    void start(const KernelState& snapshot, Time now);
    void kernel(const model::Event& e, Time now);
    // After an overrun: the model is replaced by a fresh snapshot, the differences go
    // in as changes.
    void kernel_resync(const KernelState& snapshot, Time now);
    // The NAT stage started (or its punt device changed), or stopped (nullptr). The
    // view must live until the next call.
    void nat_stage(const nat::NatView* nat, Time now);
    // Subscribers whose NAT state changed. `urgent`: a first packet waits for them.
    void subscribers(const std::vector<IpAddress>& changed, bool urgent, Time now);
    // What other processes did to tc (read while idle).
    void tc_events(const program::Applied& a, Time now);
    void reload(Mapping m, Time now);
    void request_audit(std::string reason);

    // ---- work
    // The start pass, or the urgent lane whole, else a due audit, else one bulk slice.
    Pass flush(Time now);
    // What a pass cost in time (the caller measures): sizes the bulk slices to
    // Options::slice_time.
    void observe(const Pass& p, std::chrono::nanoseconds took);
    // When flush() has something to do next; nothing: only an input can give it work.
    std::optional<Time> next_due(Time now) const;

    // ---- what it holds
    const model::KernelModel& model() const { return model_; }
    const Mapping& mapping() const { return mapping_; }
    const compile::Adjacencies& adjacencies() const { return adjacencies_; }
    const compile::Facts& facts() const { return facts_; }
    // Identity -> content hash of every rule it wants (the property tests' view).
    std::map<tc::Identity, std::uint64_t> desired() const;
    std::vector<std::string> notes() const;
    // Whether every rule of the key is installed as wanted.
    bool in_step(const compile::Key& k) const;
    Counts counts() const;
    // By device name. O(rules): for a question or a scrape, never for an event.
    std::map<std::string, DeviceCounts> device_counts() const;
    // Every rule the engine wants or has installed, in no order. O(rules).
    void for_each_rule(const std::function<void(const RuleView&)>& fn) const;
    // One key compiled afresh with its rules' state: O(that key's rules).
    KeyReport report(const compile::Key& k) const;
    bool has_key(const compile::Key& k) const { return key_ids_.count(k) != 0; }
    // The devices the engine keeps rules on, now.
    std::vector<std::string> devices() const;

private:
    static constexpr KeyId kNoKey = 0xffffffffu;
    static constexpr KeyId kFactsKey = 0xfffffffeu;  // the egress facts, as a reader of inputs
    // Handles the daemon gives: above every handle the kernel picks (it counts up from 1).
    static constexpr std::uint32_t kHandleBase = 0x80000000u;

    // 48 bytes a rule, beside its identity: at 100k routes and 100k subscribers there are
    // a third of a million.
    struct RuleState {
        std::uint64_t want = 0;        // content hash wanted
        std::uint64_t have = 0;        // content hash installed (0: not ours, or not understood)
        std::uint64_t refused_hash = 0;  // refused for good (see `refused`)
        KeyId owner = kNoKey;
        int ifindex = 0;
        std::uint32_t handle = 0;
        bool wanted = false;
        bool installed = false;
        bool in_hw = false, not_in_hw = false;
        bool refused = false;
        bool deferred = false;         // its device has no ifindex yet
    };
    using RuleMap = std::unordered_map<tc::Identity, RuleState, tc::IdentityHash, tc::IdentityEq>;

    struct KeyState {
        compile::Key key;
        std::vector<compile::Input> inputs;
        std::vector<compile::AdjacencyKey> uses;
        std::vector<const tc::Identity*> rules;
        bool alive = true;
        bool queued = false;
        bool urgent = false;
        std::uint8_t attempts = 0;
    };

    // What a flush sends.
    // Rules by value, looked up again when sent: an entry may go between the compile
    // and the send (a key compiled twice in one pass takes back what it made).
    struct Send {
        tc::Rule rule;
        std::uint64_t hash = 0;
    };
    struct Outgoing {
        std::vector<Send> sends;  // add or replace
        std::vector<tc::Identity> deletes;
        std::vector<program::Change> strays;  // owned filters nobody wants, found by an audit
        std::size_t size() const { return sends.size() + deletes.size() + strays.size(); }
    };

    // Keys and queues.
    KeyId ensure(const compile::Key& k);
    void dirty(KeyId id, Time now, bool urgent = false);
    void dirty_watchers(const compile::Input& in, Time now);
    void dirty_all(Time now);
    bool exists(const compile::Key& k) const;
    void compile_one(KeyId id, Outgoing& out);
    void retire(KeyId id);
    void finish_adjacencies(Outgoing& out);

    // Model changes.
    void on_change(const model::Change& c, Time now);
    void refresh_facts(Time now);

    // tc.
    Pass start_pass(Time now);
    // A full dump compares contents; a terse one only where our rules are, whose they are
    // and whether they are in hardware.
    void audit(Pass& p, bool at_start, bool terse);
    // The changes of one batch, with the rule each is about (nullptr: none we track).
    struct InFlight {
        std::vector<program::Change> changes;
        std::vector<const tc::Identity*> idents;
    };
    // Sends and takes the answers.
    void send(Outgoing& out, Pass& p, Time now);
    // Sends, and takes the answers of the batch sent before (a first start: the kernel
    // inserts one slice while the next is compiled).
    void send_overlapped(Outgoing& out, Pass& p, Time now);
    InFlight prepare(Outgoing& out, Pass& p, Time now);
    void land(Pass& p, Time now);  // the answers of the batch in flight, if any
    void apply_result(const program::Change& c, const tc::Identity* id, const program::ChangeResult& r, Pass& p,
                      Time now);
    void apply_event(const program::TcEvent& e, Pass& p, Time now);
    void lose_installed(RuleState& st, const tc::Identity& id, Time now, Pass* p);
    void forget_device(int ifindex, Time now);
    void schedule_retry(KeyId id, Time now);
    int ifindex_of(const std::string& dev) const;
    std::vector<std::string> device_names() const;
    void erase_if_unused(RuleMap::iterator it);
    void count_installed(const RuleState& st, int sign);
    std::uint32_t next_handle(int ifindex);
    void schedule_audit(Time now);
    void audit_device(const std::string& dev, const std::string& reason);
    tc::Rule place_of(const tc::Identity& id) const;
    RuleView view_of(const tc::Identity& id, const RuleState& st) const;

    Mapping mapping_;
    program::Backend& tc_;
    Options options_;
    model::KernelModel model_;
    compile::Facts facts_;
    std::vector<compile::Input> facts_inputs_;
    bool facts_dirty_ = true;
    const nat::NatView* nat_ = nullptr;
    compile::Adjacencies adjacencies_{compile::kMaxAdjacencies};
    std::map<compile::AdjacencyKey, std::uint32_t> adjacency_refs_;
    std::set<compile::AdjacencyKey> adjacency_check_;  // refs moved this flush

    std::vector<KeyState> keys_;
    std::unordered_map<compile::Key, KeyId, compile::KeyHash> key_ids_;
    std::vector<KeyId> free_ids_;
    Watchers watchers_;
    std::deque<KeyId> bulk_, urgent_;
    Time first_pending_{}, last_change_{};
    using Retry = std::pair<Time, KeyId>;
    std::priority_queue<Retry, std::vector<Retry>, std::greater<>> retries_;

    RuleMap rules_;
    std::unordered_map<std::uint64_t, const tc::Identity*> by_handle_;  // (ifindex << 32 | handle)
    std::unordered_map<int, std::uint32_t> next_handle_;
    std::unordered_map<int, bool> clsact_ok_;
    std::unordered_map<std::uint32_t, tc::Redirect> shared_;  // shared redirect index -> as the kernel has it
    std::unordered_map<tc::Identity, Refusal, tc::IdentityHash> refusals_;
    std::unordered_map<KeyId, std::vector<std::string>> notes_;  // the few keys that have any
    std::set<std::string> waiting_devices_;  // rules wait for these devices to appear
    std::vector<program::Change> stray_;     // owned filters an audit found that nobody wants
    std::vector<tc::Identity> retry_deletes_;  // deletes the kernel was too busy for, or lost
    // While a batch's answers are applied, entries stay (the changes point at them) and
    // those that should go are erased after.
    bool sending_ = false;
    std::optional<InFlight> in_flight_;
    std::vector<const tc::Identity*> erase_after_;
    bool deletes_due_ = false;
    std::size_t wanted_ = 0, installed_ = 0, in_hw_ = 0, not_in_hw_ = 0, refused_ = 0;

    double ns_per_change_ = 0;  // observed cost of one kernel change (and its compile), averaged
    bool start_pending_ = false;
    bool started_ = false;
    std::string audit_reason_;
    bool audit_all_ = false;
    std::set<std::string> audit_devices_;  // an audit of these only (unless audit_all_)
    Time next_audit_{};
    std::mt19937_64 rng_;

    // Scratch, reused by every compile.
    compile::Reads reads_;
    compile::KeyOutput out_;
};

}  // namespace dpo::engine

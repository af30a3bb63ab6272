// SPDX-License-Identifier: GPL-2.0-or-later
#include "engine.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "core/compile/pipeline.hpp"

namespace dpo::engine {

namespace {

template <class T>
void dedupe(std::vector<T>& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
}

std::uint64_t handle_key(int ifindex, std::uint32_t handle) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(ifindex)) << 32) | handle;
}

// What of a neighbour rules may depend on: whether it is resolved, and its MAC. Its
// NUD state moves between REACHABLE, STALE, DELAY and PROBE all the time, and a
// gateway has thousands of routes behind it, which depend on the first only.
bool resolved(const std::optional<Neighbour>& n) { return n && n->state == NeighbourState::Resolved && n->mac; }
bool forwarding_same(const std::optional<Neighbour>& a, const std::optional<Neighbour>& b) {
    if (a.has_value() != b.has_value()) return false;
    if (!a) return true;
    return a->state == b->state && a->mac == b->mac;
}

}  // namespace

Engine::Engine(Mapping m, program::Backend& tc, Options o)
    : mapping_(std::move(m)), tc_(tc), options_(o), rng_(o.seed) {}

// ---------------------------------------------------------------- keys and queues

KeyId Engine::ensure(const compile::Key& k) {
    if (const auto it = key_ids_.find(k); it != key_ids_.end()) return it->second;
    KeyId id;
    if (!free_ids_.empty()) {
        id = free_ids_.back();
        free_ids_.pop_back();
        keys_[id] = KeyState{};
    } else {
        id = static_cast<KeyId>(keys_.size());
        keys_.emplace_back();
    }
    keys_[id].key = k;
    key_ids_.emplace(k, id);
    return id;
}

void Engine::dirty(KeyId id, Time now, bool urgent) {
    if (id == kFactsKey) {
        facts_dirty_ = true;
        return;
    }
    KeyState& k = keys_[id];
    if (!k.alive) return;
    if (urgent) {
        if (!k.urgent) {
            k.urgent = true;
            urgent_.push_back(id);
        }
        return;
    }
    if (k.queued) return;
    k.queued = true;
    if (bulk_.empty()) first_pending_ = now;
    last_change_ = now;
    bulk_.push_back(id);
}

void Engine::dirty_watchers(const compile::Input& in, Time now) {
    std::vector<KeyId> ids;  // dirtying does not change the index, but copy: retire may
    watchers_.for_each(in, [&](KeyId k) { ids.push_back(k); });
    for (KeyId k : ids) dirty(k, now);
}

void Engine::dirty_all(Time now) {
    for (KeyId id = 0; id < keys_.size(); ++id)
        if (keys_[id].alive) dirty(id, now);
    facts_dirty_ = true;
}

bool Engine::exists(const compile::Key& key) const {
    return std::visit(
        [&](const auto& k) -> bool {
            using T = std::decay_t<decltype(k)>;
            if constexpr (std::is_same_v<T, compile::ClassifyKey>) return k.interface < mapping_.interfaces.size();
            else if constexpr (std::is_same_v<T, compile::LocalAddressKey>) return model_.is_local(k.address);
            else if constexpr (std::is_same_v<T, compile::PrefixKey>)
                return model_.table(mapping_.route_table).best(k.prefix) != nullptr;
            else if constexpr (std::is_same_v<T, compile::HostKey>) return model_.neighbour(k.ifindex, k.address) != nullptr;
            else if constexpr (std::is_same_v<T, compile::AdjacencyKey>) return adjacency_refs_.count(k) != 0;
            else if constexpr (std::is_same_v<T, compile::SubscriberKey>)
                return nat_ && nat_->subscriber(k.address).has_value();
            else return true;  // devices, pipelines, punt
        },
        key);
}

void Engine::retire(KeyId id) {
    notes_.erase(id);
    KeyState& k = keys_[id];
    for (const auto& in : k.inputs) watchers_.remove(in, id);
    key_ids_.erase(k.key);
    k = KeyState{};
    k.alive = false;
    free_ids_.push_back(id);
}

void Engine::compile_one(KeyId id, Outgoing& out) {
    KeyState& ks = keys_[id];
    if (!ks.alive) return;
    ks.queued = false;
    ks.urgent = false;
    for (const auto& in : ks.inputs) watchers_.remove(in, id);
    reads_.clear();
    compile::View view(mapping_, model_, facts_, nat_, adjacencies_, &reads_);
    compile::compile_key(ks.key, view, out_);

    dedupe(reads_.inputs);
    ks.inputs = std::move(reads_.inputs);
    reads_.inputs = {};
    for (const auto& in : ks.inputs) watchers_.add(in, id);

    // Next hops: counted by their users, given chains by their first, freed by their last.
    dedupe(reads_.uses);
    std::vector<compile::AdjacencyKey> fresh_hops;  // keys made after `ks` is done with
    for (const auto& a : reads_.uses)
        if (!std::binary_search(ks.uses.begin(), ks.uses.end(), a)) {
            if (adjacency_refs_[a]++ == 0) fresh_hops.push_back(a);
            adjacency_check_.insert(a);
        }
    for (const auto& a : ks.uses)
        if (!std::binary_search(reads_.uses.begin(), reads_.uses.end(), a)) {
            if (const auto r = adjacency_refs_.find(a); r != adjacency_refs_.end() && --r->second == 0)
                adjacency_refs_.erase(r);
            adjacency_check_.insert(a);
        }
    ks.uses = reads_.uses;
    if (out_.notes.empty()) notes_.erase(id);
    else notes_[id] = std::move(out_.notes);
    out_.notes = {};

    std::vector<const tc::Identity*> now_rules;
    now_rules.reserve(out_.rules.size());
    for (tc::Rule& r : out_.rules) {
        auto it = rules_.find(r);  // by the rule's identity, without copying it out
        if (it == rules_.end()) it = rules_.try_emplace(r.identity()).first;
        RuleState& st = it->second;
        const tc::Identity* ident = &it->first;
        if (st.wanted && st.owner != id && st.owner != kNoKey && keys_[st.owner].alive) {
            // Another key made this rule until now (a host rule that a host route takes
            // over): it is this key's from now on.
            auto& theirs = keys_[st.owner].rules;
            theirs.erase(std::remove(theirs.begin(), theirs.end(), ident), theirs.end());
        }
        if (!st.wanted) ++wanted_;
        st.owner = id;
        st.wanted = true;
        st.want = tc::content_hash(r, options_.hash_key);
        now_rules.push_back(ident);
        const bool parked = st.refused && st.refused_hash == st.want;
        if ((!st.installed || st.have != st.want) && !parked) out.sends.push_back({std::move(r), st.want});
    }
    std::sort(now_rules.begin(), now_rules.end());
    for (const tc::Identity* old : ks.rules) {
        if (std::binary_search(now_rules.begin(), now_rules.end(), old)) continue;
        const auto it = rules_.find(*old);
        if (it == rules_.end() || it->second.owner != id) continue;
        RuleState& st = it->second;
        st.wanted = false;
        st.owner = kNoKey;
        --wanted_;
        if (st.installed) out.deletes.push_back(*old);
        else erase_if_unused(it);
    }
    ks.rules = std::move(now_rules);
    out_.rules.clear();

    if (ks.rules.empty() && ks.uses.empty() && !exists(ks.key)) retire(id);
    // `ks` may move from here on: keys_ grows.
    for (const auto& a : fresh_hops) dirty(ensure(a), last_change_);
}

void Engine::finish_adjacencies(Outgoing& out) {
    // New next hops are compiled in the same pass as their first user; unused ones give
    // their ids back and their chains go. A next hop whose last user left and whose new
    // user came in the same pass keeps its id.
    while (!adjacency_check_.empty()) {
        const auto pending = std::move(adjacency_check_);
        adjacency_check_.clear();
        for (const auto& a : pending) {
            const auto it = key_ids_.find(a);
            if (!adjacency_refs_.count(a)) {
                adjacencies_.release(a);
                if (it != key_ids_.end()) compile_one(it->second, out);
            } else if (it != key_ids_.end() && keys_[it->second].queued) {
                compile_one(it->second, out);
            }
        }
    }
    // Adjacency keys queued by other reasons (their neighbour changed) wait their turn.
}

// ---------------------------------------------------------------- inputs

void Engine::start(const KernelState& snapshot, Time now) {
    (void)model_.resync(snapshot);
    start_pending_ = true;
    facts_dirty_ = true;
    last_change_ = first_pending_ = now;
    schedule_audit(now);
}

void Engine::kernel(const model::Event& e, Time now) {
    if (auto c = model_.apply(e)) on_change(*c, now);
}

void Engine::kernel_resync(const KernelState& snapshot, Time now) {
    for (const auto& c : model_.resync(snapshot)) on_change(c, now);
}

void Engine::on_change(const model::Change& change, Time now) {
    if (!started_ && !start_pending_) return;
    std::visit(
        [&](const auto& c) {
            using T = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<T, model::LinkChange>) {
                dirty_watchers(compile::input::LinkAt{c.ifindex}, now);
                for (const auto* l : {c.before ? &*c.before : nullptr, c.after ? &*c.after : nullptr})
                    if (l) dirty_watchers(compile::input::LinkNamed::of(l->name), now);
                // A device of ours went: its filters went with it. One that (re)appears
                // is audited: a previous run (or another tool) may have left rules there.
                if (c.before && (!c.after || c.before->name != c.after->name)) forget_device(c.ifindex, now);
                if (c.after && (!c.before || c.before->name != c.after->name)) {
                    const auto devs = device_names();
                    if (std::find(devs.begin(), devs.end(), c.after->name) != devs.end()) {
                        clsact_ok_[c.ifindex] = false;
                        audit_device(c.after->name, "device " + c.after->name + " appeared");
                        if (waiting_devices_.erase(c.after->name)) dirty_all(now);
                    }
                }
            } else if constexpr (std::is_same_v<T, model::AddressChange>) {
                dirty(ensure(compile::LocalAddressKey{c.address}), now);
                dirty_watchers(compile::input::Local{c.address}, now);
            } else if constexpr (std::is_same_v<T, model::RouteChange>) {
                if (c.table == mapping_.route_table) dirty(ensure(compile::PrefixKey{c.prefix}), now);
                // Lookups of addresses inside the prefix may now find it, or no longer.
                std::vector<KeyId> ids;
                watchers_.for_each_lpm_within(c.table, c.prefix, [&](KeyId k) { ids.push_back(k); });
                for (KeyId k : ids) dirty(k, now);
            } else {
                if (forwarding_same(c.before, c.after)) return;
                dirty(ensure(compile::HostKey{c.ifindex, c.address}), now);
                dirty_watchers(compile::input::Neighbour{c.ifindex, c.address}, now);
                if (resolved(c.before) != resolved(c.after))
                    dirty_watchers(compile::input::Resolved{c.ifindex, c.address}, now);
            }
        },
        change);
}

void Engine::nat_stage(const nat::NatView* nat, Time now) {
    const bool was = nat_ != nullptr;
    nat_ = nat;
    if (nat) {
        for (const auto& s : nat->subscribers()) ensure(compile::SubscriberKey{s});
        // The punt pair may hold rules of a previous run: adopt them.
        for (const auto& dev : {nat->punt_dev(), nat->punt_sink_dev()})
            if (!dev.empty()) audit_device(dev, "nat stage started");
    }
    if (was || nat) dirty_all(now);
}

void Engine::subscribers(const std::vector<IpAddress>& changed, bool urgent, Time now) {
    for (const auto& s : changed) dirty(ensure(compile::SubscriberKey{s}), now, urgent);
}

void Engine::reload(Mapping m, Time now) {
    mapping_ = std::move(m);
    if (!started_) return;
    // Everything may read the mapping: all keys again, and those of the new mapping
    // (interfaces, another route table). Keys that no longer exist go, with their rules.
    for (const auto& k : compile::all_keys(mapping_, model_, nat_)) ensure(k);
    dirty_all(now);
    request_audit("reload");
}

void Engine::request_audit(std::string reason) {
    audit_reason_ = std::move(reason);
    audit_all_ = true;
}

void Engine::audit_device(const std::string& dev, const std::string& reason) {
    if (audit_reason_.empty()) audit_reason_ = reason;
    audit_devices_.insert(dev);
}

void Engine::tc_events(const program::Applied& a, Time now) {
    Pass scratch;
    for (const auto& e : a.events) apply_event(e, scratch, now);
    if (a.overrun) request_audit("tc notifications lost (ENOBUFS)");
}

void Engine::schedule_audit(Time now) {
    if (options_.audit_every.count() <= 0) {
        next_audit_ = Time::max();
        return;
    }
    std::uniform_real_distribution<double> jitter(1.0 - options_.audit_jitter, 1.0 + options_.audit_jitter);
    const auto every = std::chrono::duration<double>(options_.audit_every) * jitter(rng_);
    next_audit_ = now + std::chrono::duration_cast<Time::duration>(every);
}

// ---------------------------------------------------------------- facts

void Engine::refresh_facts(Time now) {
    facts_dirty_ = false;
    std::vector<compile::Input> reads;
    compile::Facts f = compile::compute_facts(mapping_, model_, &reads);
    dedupe(reads);
    for (const auto& in : facts_inputs_) watchers_.remove(in, kFactsKey);
    for (const auto& in : reads) watchers_.add(in, kFactsKey);
    facts_inputs_ = std::move(reads);
    if (f.ingress != facts_.ingress) {
        facts_ = std::move(f);
        dirty_all(now);
        facts_dirty_ = false;
        return;
    }
    std::set<int> ifindexes;
    for (const auto* m : {&f.egress, &facts_.egress})
        for (const auto& [i, _] : *m) ifindexes.insert(i);
    for (const auto* m : {&f.refused, &facts_.refused})
        for (const auto& [i, _] : *m) ifindexes.insert(i);
    for (int i : ifindexes) {
        auto same = [i](const auto& a, const auto& b) {
            const auto x = a.find(i), y = b.find(i);
            if ((x == a.end()) != (y == b.end())) return false;
            return x == a.end() || x->second == y->second;
        };
        if (!same(f.egress, facts_.egress) || !same(f.refused, facts_.refused))
            dirty_watchers(compile::input::Egress{i}, now);
    }
    if (f.notes != facts_.notes) dirty(ensure(compile::DevicesKey{}), now);
    facts_ = std::move(f);
}

// ---------------------------------------------------------------- devices and handles

std::vector<std::string> Engine::device_names() const {
    std::vector<std::string> devs = compile::rule_devices(mapping_);
    if (nat_) {
        devs.push_back(nat_->punt_dev());
        if (!nat_->punt_sink_dev().empty()) devs.push_back(nat_->punt_sink_dev());
    }
    return devs;
}

std::vector<std::string> Engine::devices() const {
    std::vector<std::string> out;
    for (const auto& d : device_names())
        if (ifindex_of(d)) out.push_back(d);
    return out;
}

int Engine::ifindex_of(const std::string& dev) const {
    if (const Link* l = model_.link_named(dev)) return l->ifindex;
    // The punt pair exists before the link events that tell the model about it.
    if (nat_ && dev == nat_->punt_dev()) return nat_->punt_ifindex();
    return 0;
}

std::uint32_t Engine::next_handle(int ifindex) {
    auto& h = next_handle_[ifindex];
    if (h < kHandleBase) h = kHandleBase;
    const std::uint32_t out = h;
    h = h == 0xffffffffu ? kHandleBase : h + 1;  // a taken handle is answered EEXIST: the next one then
    return out;
}

void Engine::count_installed(const RuleState& st, int sign) {
    installed_ += static_cast<std::size_t>(sign);
    if (st.in_hw) in_hw_ += static_cast<std::size_t>(sign);
    if (st.not_in_hw) not_in_hw_ += static_cast<std::size_t>(sign);
}

void Engine::erase_if_unused(RuleMap::iterator it) {
    if (it->second.wanted || it->second.installed) return;
    if (sending_) {
        erase_after_.push_back(&it->first);
        return;
    }
    if (it->second.refused) --refused_;
    refusals_.erase(it->first);
    rules_.erase(it);
}

void Engine::lose_installed(RuleState& st, const tc::Identity& id, Time now, Pass* p) {
    if (!st.installed) return;
    count_installed(st, -1);
    by_handle_.erase(handle_key(st.ifindex, st.handle));
    st.installed = false;
    st.have = 0;
    st.in_hw = st.not_in_hw = false;
    if (st.wanted && st.owner != kNoKey) {
        dirty(st.owner, now);
        if (p) ++p->restored;
    }
    (void)id;
}

void Engine::forget_device(int ifindex, Time now) {
    clsact_ok_.erase(ifindex);
    next_handle_.erase(ifindex);
    std::vector<RuleMap::iterator> gone;
    for (auto it = rules_.begin(); it != rules_.end(); ++it)
        if (it->second.installed && it->second.ifindex == ifindex) gone.push_back(it);
    for (auto it : gone) {
        lose_installed(it->second, it->first, now, nullptr);
        erase_if_unused(it);
    }
}

tc::Rule Engine::place_of(const tc::Identity& id) const { return tc::placed_at(id); }

void Engine::schedule_retry(KeyId id, Time now) {
    if (id == kNoKey || !keys_[id].alive) return;
    KeyState& k = keys_[id];
    const int shift = std::min<int>(k.attempts, 8);
    k.attempts = static_cast<std::uint8_t>(std::min<int>(k.attempts + 1, 255));
    const auto wait = std::min<milliseconds>(options_.retry_first * (1 << shift), options_.retry_max);
    retries_.push({now + wait, id});
}

// ---------------------------------------------------------------- work

std::optional<Time> Engine::next_due(Time now) const {
    if (start_pending_ || !urgent_.empty() || !audit_reason_.empty()) return now;
    std::optional<Time> due;
    auto at = [&](Time t) {
        if (!due || t < *due) due = t;
    };
    if (!bulk_.empty() || facts_dirty_) at(std::min(last_change_ + options_.quiet, first_pending_ + options_.max_delay));
    if (!retries_.empty()) at(retries_.top().first);
    if (started_ && next_audit_ != Time::max()) at(next_audit_);
    return due;
}

Pass Engine::flush(Time now) {
    if (start_pending_) return start_pass(now);
    Pass p;
    if (!started_) return p;
    bool deletes_due = std::exchange(deletes_due_, false);
    while (!retries_.empty() && retries_.top().first <= now) {
        const KeyId id = retries_.top().second;
        retries_.pop();
        if (id == kNoKey) deletes_due = true;
        else dirty(id, now);
    }
    if (urgent_.empty() && (!audit_reason_.empty() || now >= next_audit_)) {
        if (audit_reason_.empty()) audit_reason_ = "periodic";
        audit(p, false, false);
        schedule_audit(now);
        deletes_due = std::exchange(deletes_due_, false) || deletes_due;
    }
    if (facts_dirty_) refresh_facts(now);
    Outgoing out;
    if (!urgent_.empty()) {
        p.urgent = true;
        while (!urgent_.empty()) {
            const KeyId id = urgent_.front();
            urgent_.pop_front();
            if (!keys_[id].urgent) continue;
            // Queued in the bulk lane too: compiled now, skipped there.
            compile_one(id, out);
            ++p.keys;
        }
    } else if (!bulk_.empty() &&
               (now - last_change_ >= options_.quiet || now - first_pending_ >= options_.max_delay)) {
        std::size_t limit = options_.slice_changes;
        if (ns_per_change_ > 0)
            limit = std::clamp<std::size_t>(
                static_cast<std::size_t>(std::chrono::nanoseconds(options_.slice_time).count() / ns_per_change_),
                options_.slice_changes_min, options_.slice_changes);
        std::size_t n = 0;
        while (!bulk_.empty() && n < options_.slice_keys && out.size() < limit) {
            const KeyId id = bulk_.front();
            bulk_.pop_front();
            if (!keys_[id].alive || !keys_[id].queued) continue;
            compile_one(id, out);
            ++n;
        }
        p.keys += n;
        if (!bulk_.empty()) first_pending_ = now;  // the rest goes in the next slices
    }
    finish_adjacencies(out);
    out.strays = std::move(stray_);
    stray_.clear();
    if (deletes_due) {
        out.deletes.insert(out.deletes.end(), retry_deletes_.begin(), retry_deletes_.end());
        retry_deletes_.clear();
    }
    if (out.size()) send(out, p, now);
    return p;
}

void Engine::observe(const Pass& p, std::chrono::nanoseconds took) {
    if (p.messages < 8) return;  // too few to say what one costs
    const double each = static_cast<double>(took.count()) / static_cast<double>(p.messages);
    ns_per_change_ = ns_per_change_ > 0 ? 0.7 * ns_per_change_ + 0.3 * each : each;
}

Pass Engine::start_pass(Time now) {
    Pass p;
    p.start = true;
    start_pending_ = false;
    started_ = true;
    refresh_facts(now);
    // Adopt what a previous run left: its rules keep their handles if they are right,
    // its next hops their ids (their chains are found by what they do).
    audit_reason_ = "start";
    audit(p, true, false);
    for (const auto& k : compile::all_keys(mapping_, model_, nat_)) ensure(k);
    rules_.reserve(std::max(rules_.size(), 2 * keys_.size()));  // about two rules a key: no rehash on the way
    Outgoing out;
    bulk_.clear();
    urgent_.clear();
    for (auto& k : keys_) k.queued = k.urgent = false;
    // On a kernel without rules of ours (a first start) nothing can be stale: rules go
    // out as they are compiled, a slice at a time, and memory holds one slice of them.
    // Otherwise stale rules are deleted first (the sweep below), and what changed since
    // the last run (usually nothing) waits for it.
    const bool cold = installed_ == 0;
    // Nothing of ours to protect yet: the first rules go in unobserved, at half the
    // kernel's work (no notification built for each); a terse dump afterwards tells what
    // is in hardware and whether anybody touched them meanwhile.
    if (cold) tc_.set_observed(false);
    const std::size_t known = keys_.size();  // next hops come from their users, as they go
    for (KeyId id = 0; id < known; ++id) {
        if (!keys_[id].alive || std::holds_alternative<compile::AdjacencyKey>(keys_[id].key)) continue;
        compile_one(id, out);
        ++p.keys;
        if (cold && out.size() >= options_.start_slice_changes) {
            finish_adjacencies(out);
            send_overlapped(out, p, now);
            out = Outgoing{};
        }
    }
    finish_adjacencies(out);
    adjacencies_.drop_reservations();
    // Sweep: ours, installed, wanted by nobody (stale, duplicates, an older version's).
    for (const auto& [id, st] : rules_)
        if (st.installed && !st.wanted) out.deletes.push_back(id);
    out.strays = std::move(stray_);
    stray_.clear();
    send(out, p, now);
    if (cold) {
        tc_.set_observed(true);
        audit(p, false, true);
    }
    return p;
}

void Engine::audit(Pass& p, bool at_start, bool terse) {
    p.audit = true;
    if (p.audit_reason.empty()) p.audit_reason = audit_reason_;
    // The devices of the mapping and the NAT stage, and any other device the installed
    // set still has rules on (a reload or a stopped NAT stage left them to delete).
    std::set<std::string> all;
    for (const auto& d : device_names()) all.insert(d);
    for (const auto& [id, st] : rules_)
        if (st.installed) all.insert(id.dev);
    std::vector<std::string> devs;
    for (const auto& d : all)
        if (audit_all_ || at_start || terse || audit_devices_.count(d)) devs.push_back(d);
    audit_reason_.clear();
    audit_devices_.clear();
    audit_all_ = false;
    for (const auto& dev : devs) {
        const int ifindex = ifindex_of(dev);
        if (!ifindex) continue;
        ++p.dumps;
        std::unordered_set<std::uint32_t> seen;
        auto& counter = next_handle_[ifindex];
        const auto done = tc_.dump(dev, terse, [&](tc::Installed&& d) {
            if (d.handle >= kHandleBase && d.handle >= counter) counter = d.handle == 0xffffffffu ? kHandleBase : d.handle + 1;
            d.rule.dev = dev;
            const bool content = !terse && d.decoded;
            // What each shared action does now, whoever holds it: a redirect to a device
            // made again must be pointed right before new holders bind to it.
            if (content && d.owned)
                for (const auto& a : d.rule.actions)
                    if (const auto* m = std::get_if<tc::Redirect>(&a); m && m->index) shared_[m->index] = *m;
            if (const auto at = by_handle_.find(handle_key(ifindex, d.handle)); at != by_handle_.end()) {
                seen.insert(d.handle);
                const auto it = rules_.find(*at->second);
                RuleState& st = it->second;
                if (!d.owned) {
                    // Somebody else's filter where ours was: ours is gone.
                    ++p.drift;
                    lose_installed(st, it->first, last_change_, nullptr);
                    erase_if_unused(it);
                    return;
                }
                if (!terse) {
                    const std::uint64_t h = content ? tc::content_hash(d.rule, options_.hash_key) : 0;
                    if (st.have != h) {
                        ++p.drift;
                        st.have = h;
                        if (st.wanted && st.owner != kNoKey) dirty(st.owner, last_change_);
                    }
                }
                count_installed(st, -1);
                st.in_hw = d.in_hw;
                st.not_in_hw = d.not_in_hw;
                count_installed(st, +1);
                return;
            }
            if (!d.owned) return;  // not ours, not where ours are: left alone
            seen.insert(d.handle);
            // Ours, but not where the installed set has anything: a previous run's rule,
            // an answer that was lost, or somebody's copy. Adopt it if its rule has none
            // installed; else it is a stray, and goes.
            bool adopt = false;
            if (content) {
                auto [it, fresh] = rules_.try_emplace(d.rule.identity());
                RuleState& st = it->second;
                if (!st.installed) {
                    adopt = true;
                    st.installed = true;
                    st.ifindex = ifindex;
                    st.handle = d.handle;
                    st.have = tc::content_hash(d.rule, options_.hash_key);
                    st.in_hw = d.in_hw;
                    st.not_in_hw = d.not_in_hw;
                    count_installed(st, +1);
                    by_handle_[handle_key(ifindex, d.handle)] = &it->first;
                    if (st.wanted && st.have != st.want && st.owner != kNoKey) dirty(st.owner, last_change_);
                    if (at_start) compile::reserve_adjacency(adjacencies_, d.rule);  // the next hops' ids
                } else if (fresh) {
                    rules_.erase(it);
                }
            }
            if (!adopt) {
                stray_.push_back(program::Change::deletion(ifindex, d.rule, d.handle));
            }
            if (!at_start) ++p.drift;
        });
        if (!done) {
            p.problems.push_back("audit of " + dev + ": " + done.error());
            continue;
        }
        // Installed by our account, gone from the kernel.
        std::vector<RuleMap::iterator> gone;
        for (auto it = rules_.begin(); it != rules_.end(); ++it)
            if (it->second.installed && it->second.ifindex == ifindex && !seen.count(it->second.handle))
                gone.push_back(it);
        for (auto it : gone) {
            ++p.drift;
            lose_installed(it->second, it->first, last_change_, nullptr);
            erase_if_unused(it);
        }
        // Installed and wanted by nobody (a delete whose answer was lost): delete again.
        if (!at_start)
            for (auto& [id, st] : rules_)
                if (st.installed && !st.wanted && st.ifindex == ifindex) retry_deletes_.push_back(id);
    }
    if (!retry_deletes_.empty()) deletes_due_ = true;
}

}  // namespace dpo::engine

namespace dpo::engine {

void Engine::send(Outgoing& out, Pass& p, Time now) {
    land(p, now);
    InFlight batch = prepare(out, p, now);
    if (batch.changes.empty()) return;
    in_flight_ = std::move(batch);
    tc_.submit(in_flight_->changes);  // they stay where they are until landed
    land(p, now);
}

void Engine::send_overlapped(Outgoing& out, Pass& p, Time now) {
    InFlight batch = prepare(out, p, now);  // while the kernel works on the batch before
    land(p, now);
    if (batch.changes.empty()) return;
    in_flight_ = std::move(batch);
    tc_.submit(in_flight_->changes);  // they stay where they are until landed
    sending_ = true;  // its rules stay in the table until their answers are in
}

Engine::InFlight Engine::prepare(Outgoing& out, Pass& p, Time now) {
    InFlight batch;
    auto& changes = batch.changes;
    auto& idents = batch.idents;  // the rule each change is about; nullptr: none we track
    // Deletes first: a stale rule must not shadow its replacement in between.
    std::sort(out.deletes.begin(), out.deletes.end());
    out.deletes.erase(std::unique(out.deletes.begin(), out.deletes.end()), out.deletes.end());
    for (const tc::Identity& id : out.deletes) {
        const auto it = rules_.find(id);
        if (it == rules_.end() || !it->second.installed || it->second.wanted) continue;
        changes.push_back(program::Change::deletion(it->second.ifindex, place_of(id), it->second.handle));
        idents.push_back(&it->first);
    }
    for (auto& c : out.strays) {
        changes.push_back(std::move(c));
        idents.push_back(nullptr);
    }
    // A shared redirect (one counter per egress) held by installed rules keeps its
    // target when a new holder names it: if its device was made again, point it right
    // first, in place, for every holder.
    // A rule compiled twice in the pass is sent as last compiled, if still wanted so.
    std::vector<std::pair<const tc::Identity*, tc::Rule>> sends;
    {
        std::unordered_set<const tc::Identity*> seen;
        for (auto r = out.sends.rbegin(); r != out.sends.rend(); ++r) {
            const auto it = rules_.find(r->rule);
            if (it == rules_.end() || !it->second.wanted || !seen.insert(&it->first).second) continue;
            const RuleState& st = it->second;
            if ((st.installed && st.have == st.want) || r->hash != st.want) continue;
            sends.emplace_back(&it->first, std::move(r->rule));
        }
        std::reverse(sends.begin(), sends.end());
    }
    std::map<std::uint32_t, tc::Redirect> repoint;
    for (const auto& [_, r] : sends)
        for (const auto& a : r.actions)
            if (const auto* m = std::get_if<tc::Redirect>(&a); m && m->index)
                if (const auto it = shared_.find(m->index); it != shared_.end() && !(it->second == *m))
                    repoint.emplace(m->index, *m);
    for (const auto& [_, m] : repoint) {
        program::Change c;
        c.kind = program::Change::Kind::ReplaceAction;
        c.action = m;
        changes.push_back(std::move(c));
        idents.push_back(nullptr);
    }
    for (auto& [id, rule] : sends) {
        RuleState& st = rules_.at(*id);
        program::Change c;
        c.rule = std::move(rule);
        if (st.installed) {
            c.kind = program::Change::Kind::Replace;
            c.ifindex = st.ifindex;
            c.handle = st.handle;
        } else {
            const int ifindex = ifindex_of(c.rule.dev);
            if (!ifindex) {
                // Not there yet (or not any more): the rule waits for the device.
                st.deferred = true;
                waiting_devices_.insert(c.rule.dev);
                continue;
            }
            if (!clsact_ok_[ifindex]) {
                land(p, now);  // the backend does one thing at a time
                if (auto q = tc_.ensure_clsact(c.rule.dev); !q) {
                    p.problems.push_back(q.error());
                    ++p.retried;
                    schedule_retry(st.owner, now);
                    continue;
                }
                clsact_ok_[ifindex] = true;
            }
            st.deferred = false;
            c.kind = program::Change::Kind::Add;
            c.ifindex = ifindex;
            c.handle = next_handle(ifindex);
        }
        changes.push_back(std::move(c));
        idents.push_back(id);
    }
    return batch;
}

void Engine::land(Pass& p, Time now) {
    if (!in_flight_) return;
    const program::Applied applied = tc_.collect();
    const InFlight batch = std::move(*in_flight_);
    in_flight_.reset();
    const auto& changes = batch.changes;
    const auto& idents = batch.idents;
    sending_ = true;
    p.messages += changes.size();
    // In the order it happened: what others did between two of our changes applies to
    // the state between them.
    std::size_t e = 0;
    for (std::size_t i = 0; i < changes.size(); ++i) {
        for (; e < applied.events.size() && applied.after[e] <= i; ++e) apply_event(applied.events[e], p, now);
        const program::ChangeResult none{0, "", true, false, false};
        apply_result(changes[i], idents[i], i < applied.results.size() ? applied.results[i] : none, p, now);
    }
    for (; e < applied.events.size(); ++e) apply_event(applied.events[e], p, now);
    sending_ = false;
    for (const tc::Identity* id : std::exchange(erase_after_, {}))
        if (const auto it = rules_.find(*id); it != rules_.end()) erase_if_unused(it);
    if (applied.overrun) request_audit("tc notifications lost (ENOBUFS)");
}

void Engine::apply_result(const program::Change& c, const tc::Identity* id, const program::ChangeResult& r, Pass& p,
                          Time now) {
    using Kind = program::Change::Kind;
    using program::Verdict;
    const Verdict v = program::classify(c.kind, r);
    if (v == Verdict::Lost) {
        // The audit says what happened; the rule's key looks again after it.
        ++p.lost;
        request_audit("answers lost (receive overrun)");
        if (id)
            if (const auto it = rules_.find(*id); it != rules_.end() && it->second.owner != kNoKey)
                dirty(it->second.owner, now);
        return;
    }
    if (c.kind == Kind::ReplaceAction) {
        if (v == Verdict::Done) {
            ++p.repointed;
            if (const auto* m = std::get_if<tc::Redirect>(&c.action)) shared_[m->index] = *m;
        } else {
            p.problems.push_back("shared action " + tc::action_text(c.action) + ": " + program::to_string(v) +
                                 " (errno " + std::to_string(r.error) + (r.extack.empty() ? "" : ", " + r.extack) + ")");
        }
        return;
    }
    if (!id) {  // a stray: gone, or left for the next audit
        if (v == Verdict::Done) ++p.deleted;
        return;
    }
    const auto it = rules_.find(*id);
    if (it == rules_.end()) return;
    RuleState& st = it->second;
    if (c.kind == Kind::Delete) {
        switch (v) {
            case Verdict::Done:
                ++p.deleted;
                lose_installed(st, it->first, now, nullptr);
                break;
            case Verdict::Retry:
                ++p.retried;
                retry_deletes_.push_back(it->first);
                retries_.push({now + options_.retry_first, kNoKey});
                return;
            default:
                // It will not go: forget it; the next audit finds it again if it stayed.
                p.problems.push_back("delete " + c.rule.key() + ": errno " + std::to_string(r.error) +
                                     (r.extack.empty() ? "" : " (" + r.extack + ")"));
                lose_installed(st, it->first, now, nullptr);
                break;
        }
        erase_if_unused(it);
        return;
    }
    // What was sent is what was wanted when sent (send() checked), and answers come
    // before anything recompiles it.
    const std::uint64_t sent = st.want;
    switch (v) {
        case Verdict::Done:
            if (c.kind == Kind::Add) {
                st.installed = true;
                st.ifindex = c.ifindex;
                st.handle = c.handle;
                by_handle_[handle_key(c.ifindex, c.handle)] = &it->first;
                ++p.added;
            } else {
                count_installed(st, -1);
                ++p.replaced;
            }
            st.have = sent;
            st.in_hw = r.in_hw;
            st.not_in_hw = r.not_in_hw;
            count_installed(st, +1);
            if (st.refused) {
                st.refused = false;
                --refused_;
                refusals_.erase(it->first);
            }
            if (st.owner != kNoKey) keys_[st.owner].attempts = 0;
            for (const auto& a : c.rule.actions)
                if (const auto* m = std::get_if<tc::Redirect>(&a); m && m->index) shared_.try_emplace(m->index, *m);
            break;
        case Verdict::Missing:
            lose_installed(st, it->first, now, nullptr);
            break;
        case Verdict::Taken:
        case Verdict::Retry:
            ++p.retried;
            schedule_retry(st.owner, now);
            break;
        case Verdict::Permanent:
            if (!st.refused) ++refused_;
            st.refused = true;
            st.refused_hash = sent;
            refusals_[it->first] = Refusal{c.rule.key(), r.error, r.extack};
            p.refused.push_back(refusals_[it->first]);
            break;
        default:
            break;
    }
}

void Engine::apply_event(const program::TcEvent& e, Pass& p, Time now) {
    using Kind = program::TcEvent::Kind;
    std::vector<RuleMap::iterator> hit;
    switch (e.kind) {
        case Kind::FilterDeleted:
        case Kind::FilterChanged: {
            const auto at = by_handle_.find(handle_key(e.ifindex, e.handle));
            if (at == by_handle_.end()) return;  // not ours
            const auto it = rules_.find(*at->second);
            if (it == rules_.end()) return;
            if (e.kind == Kind::FilterChanged) {
                // Replaced by someone: what it holds now is not what we installed.
                std::uint64_t h = 0;
                if (e.filter && e.filter->owned && e.filter->decoded) {
                    tc::Rule r = e.filter->rule;
                    r.dev = it->first.dev;
                    h = tc::content_hash(r, options_.hash_key);
                }
                if (h == it->second.have) return;
                it->second.have = h;
                if (it->second.wanted && it->second.owner != kNoKey) {
                    dirty(it->second.owner, now);
                    ++p.restored;
                }
                return;
            }
            hit.push_back(it);
            break;
        }
        case Kind::PrioDeleted:
        case Kind::QdiscDeleted:
            if (e.kind == Kind::QdiscDeleted) clsact_ok_[e.ifindex] = false;
            for (auto it = rules_.begin(); it != rules_.end(); ++it) {
                const RuleState& st = it->second;
                if (!st.installed || st.ifindex != e.ifindex) continue;
                if (e.kind == Kind::PrioDeleted &&
                    (it->first.chain != e.chain || it->first.prio != e.prio ||
                     (e.protocol && it->first.protocol != e.protocol)))
                    continue;
                hit.push_back(it);
            }
            break;
    }
    for (auto it : hit) {
        lose_installed(it->second, it->first, now, &p);
        erase_if_unused(it);
    }
}

// ---------------------------------------------------------------- views

std::map<tc::Identity, std::uint64_t> Engine::desired() const {
    std::map<tc::Identity, std::uint64_t> out;
    for (const auto& [id, st] : rules_)
        if (st.wanted) out.emplace(id, st.want);
    return out;
}

std::vector<std::string> Engine::notes() const {
    std::vector<std::string> out;
    for (const auto& [_, n] : notes_) out.insert(out.end(), n.begin(), n.end());
    dedupe(out);
    return out;
}

bool Engine::in_step(const compile::Key& key) const {
    const auto it = key_ids_.find(key);
    if (it == key_ids_.end()) return true;
    const KeyState& k = keys_[it->second];
    if (k.queued || k.urgent) return false;
    for (const tc::Identity* id : k.rules) {
        const RuleState& st = rules_.at(*id);
        if (!st.installed || st.have != st.want) return false;
    }
    return true;
}

Counts Engine::counts() const {
    Counts c;
    c.rules = wanted_;
    c.installed = installed_;
    c.in_hw = in_hw_;
    c.not_in_hw = not_in_hw_;
    c.refused = refused_;
    c.keys = key_ids_.size();
    c.watchers = watchers_.edges();
    c.adjacencies = adjacencies_.size();
    c.queued = bulk_.size() + urgent_.size();
    return c;
}

std::map<std::string, DeviceCounts> Engine::device_counts() const {
    std::map<std::string, DeviceCounts> out;
    for (const auto& [id, st] : rules_) {
        DeviceCounts& d = out[id.dev];
        d.desired += st.wanted;
        d.installed += st.installed;
        d.in_hw += st.installed && st.in_hw;
        d.not_in_hw += st.installed && st.not_in_hw;
        d.refused += st.refused;
    }
    return out;
}

RuleView Engine::view_of(const tc::Identity& id, const RuleState& st) const {
    RuleView v;
    v.identity = &id;
    if (st.wanted && st.owner != kNoKey && st.owner < keys_.size() && keys_[st.owner].alive)
        v.owner = keys_[st.owner].key;
    v.handle = st.installed ? st.handle : 0;
    v.wanted = st.wanted;
    v.installed = st.installed;
    v.in_step = st.installed && st.wanted && st.have == st.want;
    v.in_hw = st.installed && st.in_hw;
    v.not_in_hw = st.installed && st.not_in_hw;
    if (st.refused)
        if (const auto r = refusals_.find(id); r != refusals_.end()) v.refusal = &r->second;
    return v;
}

void Engine::for_each_rule(const std::function<void(const RuleView&)>& fn) const {
    for (const auto& [id, st] : rules_) fn(view_of(id, st));
}

KeyReport Engine::report(const compile::Key& k) const {
    KeyReport r;
    r.key = k;
    if (const auto it = key_ids_.find(k); it != key_ids_.end()) {
        r.known = true;
        r.queued = keys_[it->second].queued || keys_[it->second].urgent;
    }
    // On copies: a compile may give a next hop a chain, which only a flush may do.
    compile::Adjacencies adjacencies = adjacencies_;
    compile::Reads reads;
    compile::KeyOutput out;
    compile::View view(mapping_, model_, facts_, nat_, adjacencies, &reads);
    compile::compile_key(k, view, out);
    r.notes = std::move(out.notes);
    for (auto& rule : out.rules) {
        RuleView v;
        if (const auto it = rules_.find(rule); it != rules_.end()) v = view_of(it->first, it->second);
        r.rules.emplace_back(std::move(rule), v);
    }
    return r;
}

}  // namespace dpo::engine

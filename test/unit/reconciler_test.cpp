// SPDX-License-Identifier: GPL-2.0-or-later
// The reconciler against a fake tc backend that behaves like the kernel's tables.
#include <catch2/catch.hpp>

#include <map>
#include <optional>

#include "core/program/reconciler.hpp"

using namespace dpo;

namespace {

// Keeps filters per device like the kernel: handles, ownership, in_hw flags.
class FakeTc : public program::Backend {
public:
    std::map<std::string, std::vector<tc::Installed>> devs;
    std::size_t messages = 0;
    std::size_t clsact_calls = 0;
    std::string refuse_key;  // a rule the "kernel" refuses
    // The next apply loses every ack and carries out only its first `drop_after` adds,
    // as if the kernel had stopped there (it does not, but nothing else can be known).
    std::optional<std::size_t> drop_after;

    Result<std::vector<tc::Installed>> dump(const std::string& dev) override {
        auto it = devs.find(dev);
        if (it == devs.end()) return fail("no device " + dev);
        return it->second;
    }
    Result<Done> ensure_clsact(const std::string&) override {
        ++clsact_calls;
        return Done{};
    }
    program::ApplyReport apply(const reconcile::Plan& p) override {
        program::ApplyReport r;
        for (const auto& d : p.deletes) {
            auto& v = devs[d.rule.dev];
            std::erase_if(v, [&](const tc::Installed& i) { return i.handle == d.handle; });
            ++r.sent;
            ++r.done;
        }
        for (const auto& x : p.replaces) {
            for (auto& i : devs[x.rule.dev])
                if (i.handle == x.handle) i.rule = bound(x.rule);
            ++r.sent;
            ++r.done;
        }
        std::size_t n = 0;
        const auto limit = drop_after;
        drop_after.reset();
        for (const auto& a : p.adds) {
            ++r.sent;
            if (limit) {
                ++r.lost;
                if (n++ >= *limit) continue;
            }
            if (a.key() == refuse_key) {
                r.refused.push_back({a.key(), 95, "Operation not supported"});
                continue;
            }
            tc::Installed i;
            i.rule = bound(a);
            i.handle = ++next_handle_;
            i.owned = i.decoded = true;
            i.not_in_hw = true;
            devs[a.dev].push_back(i);
            if (!limit) ++r.done;
        }
        messages += r.sent;
        return r;
    }
    program::ApplyReport replace_actions(const std::vector<tc::Action>& actions) override {
        program::ApplyReport r;
        for (const auto& a : actions) {
            const auto& want = std::get<tc::Redirect>(a);
            for (auto& [_, rules] : devs)
                for (auto& i : rules)
                    for (auto& x : i.rule.actions)
                        if (auto* m = std::get_if<tc::Redirect>(&x); m && m->index == want.index) *m = want;
            ++r.sent;
            ++r.done;
        }
        action_replaces += r.sent;
        return r;
    }
    std::size_t action_replaces = 0;

private:
    // As the kernel does: a rule naming the index of an existing shared action binds
    // to that action as it is; the parameters it gives are ignored.
    tc::Rule bound(tc::Rule r) const {
        for (auto& x : r.actions) {
            auto* m = std::get_if<tc::Redirect>(&x);
            if (!m || !m->index) continue;
            for (const auto& [_, rules] : devs)
                for (const auto& i : rules)
                    for (const auto& y : i.rule.actions)
                        if (const auto* e = std::get_if<tc::Redirect>(&y); e && e->index == m->index) *m = *e;
        }
        return r;
    }

    std::uint32_t next_handle_ = 0;
};

tc::Rule rule(std::uint16_t vid) {
    tc::Rule r;
    r.dev = "p0";
    r.chain = 1;
    r.prio = 1;
    r.protocol = tc::kEth8021Q;
    r.match.vlan_id = vid;
    r.actions = {tc::Goto{256}};
    return r;
}

}  // namespace

TEST_CASE("first sync installs everything; the second sends nothing") {
    FakeTc fake;
    fake.devs["p0"] = {};
    reconcile::Reconciler rec(fake);
    auto a = rec.sync({rule(100), rule(200)}, {"p0"});
    REQUIRE(a.ok());
    CHECK(a->added == 2);
    CHECK(a->messages == 2);
    CHECK(a->not_in_hw == 2);
    CHECK(fake.clsact_calls == 1);  // empty device: make sure the qdisc is there
    auto b = rec.sync({rule(100), rule(200)}, {"p0"});
    REQUIRE(b.ok());
    CHECK(b->messages == 0);
    CHECK(b->kept == 2);
    CHECK(fake.clsact_calls == 1);
}

TEST_CASE("a foreign rule stays; a refused rule is reported with the kernel's words") {
    FakeTc fake;
    tc::Installed foreign;
    foreign.rule = rule(300);
    foreign.handle = 99;
    fake.devs["p0"] = {foreign};
    fake.refuse_key = rule(200).key();
    reconcile::Reconciler rec(fake);
    auto a = rec.sync({rule(100), rule(200)}, {"p0"});
    REQUIRE(a.ok());
    REQUIRE(a->refused.size() == 1);
    CHECK(a->refused[0].extack == "Operation not supported");
    CHECK(fake.devs["p0"].size() == 2);  // the foreign one and rule(100)
    CHECK(fake.devs["p0"][0].handle == 99);
}

TEST_CASE("flush deletes ours and only ours") {
    FakeTc fake;
    tc::Installed foreign;
    foreign.rule = rule(300);
    foreign.handle = 99;
    fake.devs["p0"] = {foreign};
    reconcile::Reconciler rec(fake);
    REQUIRE(rec.sync({rule(100), rule(200)}, {"p0"}).ok());
    auto f = rec.flush({"p0"});
    REQUIRE(f.ok());
    CHECK(f->deleted == 2);
    REQUIRE(fake.devs["p0"].size() == 1);
    CHECK(fake.devs["p0"][0].handle == 99);
}

TEST_CASE("a device that cannot be dumped is an error, not a partial apply") {
    FakeTc fake;
    reconcile::Reconciler rec(fake);
    auto a = rec.sync({rule(100)}, {"p9"});
    REQUIRE_FALSE(a.ok());
    CHECK(a.error() == "no device p9");
    CHECK(fake.messages == 0);
}

TEST_CASE("rules for a device outside the pass wait for a pass that has it") {
    FakeTc fake;
    fake.devs["p0"] = {};
    fake.devs["vxlan0"] = {};
    reconcile::Reconciler rec(fake);
    tc::Rule decap = rule(100);
    decap.dev = "vxlan0";
    auto a = rec.sync({rule(100), decap}, {"p0"});
    REQUIRE(a.ok());
    CHECK(a->added == 1);
    CHECK(fake.devs["vxlan0"].empty());
    auto b = rec.sync({rule(100), decap}, {"p0", "vxlan0"});
    REQUIRE(b.ok());
    CHECK(b->added == 1);
    CHECK(b->kept == 1);
    CHECK(fake.devs["vxlan0"].size() == 1);
}

TEST_CASE("a shared redirect left pointing at a re-created device is pointed right, for every holder") {
    // p0's rules send to vxlan0 through one shared mirred per VNI; vxlan0 was deleted
    // and re-created (new ifindex 9): the action still names the old device.
    FakeTc fake;
    auto holder = [](std::uint16_t vid, int target) {
        tc::Rule r = rule(vid);
        r.chain = 256;
        r.actions = {tc::Redirect{target, "vxlan0", 0xda001389}};
        return r;
    };
    for (std::uint16_t vid : {100, 101}) {
        tc::Installed i;
        i.rule = holder(vid, 7);
        i.handle = vid;
        i.owned = i.decoded = true;
        fake.devs["p0"].push_back(i);
    }
    reconcile::Reconciler rec(fake);
    auto a = rec.sync({holder(100, 9), holder(101, 9)}, {"p0"});
    REQUIRE(a.ok());
    CHECK(a->repointed == 1);
    CHECK(fake.action_replaces == 1);
    CHECK(a->messages == 0);  // the holders are right once their action is
    for (const auto& i : fake.devs["p0"]) CHECK(std::get<tc::Redirect>(i.rule.actions[0]).ifindex == 9);
    auto b = rec.sync({holder(100, 9), holder(101, 9)}, {"p0"});
    REQUIRE(b.ok());
    CHECK(b->repointed == 0);
    CHECK(b->messages == 0);
}

TEST_CASE("acks lost to an overrun: what happened is read back and the rest sent again, once") {
    FakeTc fake;
    fake.devs["p0"] = {};
    fake.drop_after = 1;
    reconcile::Reconciler rec(fake);
    auto a = rec.sync({rule(100), rule(200), rule(300)}, {"p0"});
    REQUIRE(a.ok());
    CHECK(a->lost == 3);
    CHECK(a->refused.empty());
    CHECK(fake.devs["p0"].size() == 3);  // the second round added the two that were missing
    CHECK(a->messages == 5);
    auto b = rec.sync({rule(100), rule(200), rule(300)}, {"p0"});
    REQUIRE(b.ok());
    CHECK(b->messages == 0);
}

// SPDX-License-Identifier: GPL-2.0-or-later
// The reconciler against a fake tc backend that behaves like the kernel's tables.
#include <catch2/catch.hpp>

#include <map>

#include "core/reconcile/reconciler.hpp"

using namespace dpo;

namespace {

// Keeps filters per device like the kernel: handles, ownership, in_hw flags.
class FakeTc : public tc::Backend {
public:
    std::map<std::string, std::vector<tc::Installed>> devs;
    std::size_t messages = 0;
    std::size_t clsact_calls = 0;
    std::string refuse_key;  // a rule the "kernel" refuses

    Result<std::vector<tc::Installed>> dump(const std::string& dev) override {
        auto it = devs.find(dev);
        if (it == devs.end()) return fail("no device " + dev);
        return it->second;
    }
    Result<Done> ensure_clsact(const std::string&) override {
        ++clsact_calls;
        return Done{};
    }
    tc::ApplyReport apply(const reconcile::Plan& p) override {
        tc::ApplyReport r;
        for (const auto& d : p.deletes) {
            auto& v = devs[d.rule.dev];
            std::erase_if(v, [&](const tc::Installed& i) { return i.handle == d.handle; });
            ++r.sent;
            ++r.done;
        }
        for (const auto& x : p.replaces) {
            for (auto& i : devs[x.rule.dev])
                if (i.handle == x.handle) i.rule = x.rule;
            ++r.sent;
            ++r.done;
        }
        for (const auto& a : p.adds) {
            ++r.sent;
            if (a.key() == refuse_key) {
                r.refused.push_back({a.key(), 95, "Operation not supported"});
                continue;
            }
            tc::Installed i;
            i.rule = a;
            i.handle = ++next_handle_;
            i.owned = i.decoded = true;
            i.not_in_hw = true;
            devs[a.dev].push_back(i);
            ++r.done;
        }
        messages += r.sent;
        return r;
    }

private:
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

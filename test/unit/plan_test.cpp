// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include "core/reconcile/plan.hpp"

using dpo::tc::Installed;
using dpo::tc::Rule;

namespace {

Rule classify(std::uint16_t vid, std::uint32_t chain) {
    Rule r;
    r.dev = "p0";
    r.chain = 1;
    r.prio = 1;
    r.protocol = dpo::tc::kEth8021Q;
    r.match.vlan_id = vid;
    r.actions = {dpo::tc::Goto{chain}};
    return r;
}

Installed installed(Rule r, std::uint32_t handle, bool owned = true, bool decoded = true) {
    Installed i;
    i.rule = std::move(r);
    i.handle = handle;
    i.owned = owned;
    i.decoded = decoded;
    return i;
}

}  // namespace

TEST_CASE("a restart with nothing changed plans no change at all") {
    std::vector<Rule> want{classify(100, 256), classify(200, 512)};
    auto p = dpo::reconcile::plan(want, {installed(classify(200, 512), 2), installed(classify(100, 256), 1)});
    CHECK(p.empty());
    CHECK(p.kept == 2);
}

TEST_CASE("only the difference is sent: add the missing, replace the changed, delete the stale") {
    std::vector<Rule> want{classify(100, 256), classify(101, 256), classify(200, 512)};
    auto p = dpo::reconcile::plan(want, {installed(classify(100, 256), 1), installed(classify(200, 256), 2),
                                         installed(classify(300, 256), 3)});
    CHECK(p.kept == 1);
    REQUIRE(p.adds.size() == 1);
    CHECK(p.adds[0] == classify(101, 256));
    REQUIRE(p.replaces.size() == 1);
    CHECK(p.replaces[0].handle == 2);
    CHECK(p.replaces[0].rule == classify(200, 512));
    REQUIRE(p.deletes.size() == 1);
    CHECK(p.deletes[0].handle == 3);
}

TEST_CASE("rules that are not ours are never touched, even where ours would go") {
    auto p = dpo::reconcile::plan({classify(100, 256)}, {installed(classify(100, 256), 7, /*owned=*/false),
                                                          installed(classify(999, 256), 8, /*owned=*/false)});
    CHECK(p.deletes.empty());
    CHECK(p.replaces.empty());
    CHECK(p.adds.size() == 1);
}

TEST_CASE("our rules that cannot be decoded, and duplicates, are deleted") {
    auto p = dpo::reconcile::plan({classify(100, 256)},
                                  {installed(classify(100, 256), 1), installed(classify(100, 256), 2),
                                   installed(classify(5, 5), 3, true, /*decoded=*/false)});
    CHECK(p.kept == 1);
    REQUIRE(p.deletes.size() == 2);
    CHECK(p.deletes[0].handle == 2);
    CHECK(p.deletes[1].handle == 3);
    CHECK(p.adds.empty());
}

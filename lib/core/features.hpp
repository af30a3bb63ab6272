// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the daemon's rules need from the kernel, and what it does when something is
// missing: the pure half of the start-up feature probe (kernel/feature_probe.hpp asks
// the kernel). One feature per kernel module the rules use; each belongs to a stage:
//
//   core   clsact, cls_flower, act_gact, act_mirred, act_pedit, act_csum, act_vlan:
//          every routed packet's rules use them (goto, MAC and TTL rewrite, the IPv4
//          header checksum, pop/push, redirect). Without one, no rule of the fast path
//          works: the daemon refuses to start and says which (exit 1), rather than run
//          with nothing in it and look healthy. act_vlan is core whatever the mapping
//          (an EVPN-only mapping would not use it): a core set that does not depend on
//          the mapping means a reload can never newly need a core feature.
//   nat    act_ct, act_police (the punt rule's rate limit), nf_conntrack_netlink (only
//          with `nat`): without them the daemon
//          runs without its NAT stage, the state the engine already knows (NAT stage
//          not running: inner -> outer IPv4 left to the kernel).
//   vxlan  act_tunnel_key (only with EVPN or ACI interfaces): without it those
//          interfaces are left out of the fast path (their traffic, both ways, left to
//          the kernel), as the compiler already does when the VXLAN device is unusable.
// Degrading costs the engine nothing new: both are states it is built for.

#include <cstdint>
#include <string>
#include <vector>

#include "core/mapping.hpp"

namespace dpo::features {

enum class Feature : std::uint8_t { Clsact, Flower, Gact, Mirred, Pedit, Csum, Vlan, Ct, TunnelKey, Police, Ctnetlink };
enum class Stage : std::uint8_t { Core, Nat, Vxlan };

struct Spec {
    Feature feature;
    const char* name;    // in log lines: feature=...
    const char* module;  // the module that provides it (/sys/module/<module> when loaded)
    const char* kind;    // its tc kind (qdisc, classifier or action); "" for ctnetlink
    Stage stage;
};
const Spec& spec(Feature f);
// Every feature, in the order the probe asks for them (a qdisc, then the classifier,
// then the actions, then conntrack netlink).
const std::vector<Feature>& all();

// What the mapping's rules need: the core always, a stage's features when it has one.
std::vector<Feature> needed(const Mapping& m);

// The kernel's answer to a probe of `f` (errno, positive; 0: accepted).
enum class Answer : std::uint8_t { Present, Missing, Unknown };
Answer classify(Feature f, int error);

struct Finding {
    Feature feature;
    Answer answer = Answer::Unknown;
    int error = 0;        // what the kernel said (0 when sysfs showed the module loaded)
    std::string extack;   // and why
};

// What the daemon does about the findings. A feature not found missing counts as there:
// an Unknown answer (the probe itself failed, e.g. no permission) is logged, not acted on.
struct Verdict {
    bool refuse = false;  // a core feature is missing
    bool nat = true;      // the NAT stage may run
    bool vxlan = true;    // EVPN and ACI interfaces may be in the fast path
    std::vector<Feature> missing;
};
Verdict decide(const std::vector<Finding>& findings);
// What the absence of `f` does to the fast path, for the log line.
std::string effect(Feature f);

// The mapping the engine runs with: without the VXLAN stage, no EVPN or ACI interface.
Mapping admit(Mapping m, const Verdict& v);

}  // namespace dpo::features

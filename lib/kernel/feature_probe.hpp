// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// At start, once: has the kernel what the mapping's rules need? core/features.hpp says
// what that is and what the daemon does when a part is missing; this asks the kernel.
//
// How, without touching traffic:
//  1. /sys/module/<module>: a loaded module is there, and nothing is sent for it. With
//     the package's modules-load.d file every module is loaded at boot, so a normal
//     start costs no message at all.
//  2. A module that is not loaded may still load on first use: the kernel
//     request_module()s a tc kind it does not know for a requester with CAP_NET_ADMIN
//     (and nfnetlink a subsystem). /sys alone would be a false alarm then, so the
//     kernel is asked the way the rules will ask it, through the daemon's own tc codec:
//     on the uplink (lo while the uplink does not exist yet: the daemon tolerates that),
//       - clsact (an existing one is fine; one the probe made on lo, or on the uplink
//         when the daemon will not start, is deleted again),
//       - one flower filter without actions, then the same filter replaced with one
//         action of each kind to check, one message per kind so the answer names the
//         kind, then deleted.
//     The filter sits in chain 0x0FFFFFFF (the highest chain a goto can name; the
//     daemon's chains end below 0x20000 and no goto leads there), at the last prio
//     (0xffff), matches only frames sent to 00:00:00:00:00:00 and is skip_hw (the NIC's
//     driver never sees it): no packet reaches it, and it lives for a few messages.
//     ctnetlink: one IPCTNL_MSG_CT_GET_STATS (read-only) on NETLINK_NETFILTER.
//  Cost: 0 messages when every module needed is loaded; otherwise at most 1 (clsact)
//  + 1 (flower) + 1 per action kind not loaded (8 at most) + 1 (delete the filter)
//  + 1 (delete a clsact it made) + 1 (ctnetlink): 13 at most, each answered by an ack.
// The answers are read as values: ENOENT / EOPNOTSUPP (EINVAL for ctnetlink) is a
// missing feature; any other error (no permission, a device gone meanwhile) leaves the
// feature unknown: logged and assumed present, a rule that needs it will say.

#include <cstdint>
#include <string>
#include <vector>

#include "core/features.hpp"
#include "core/mapping.hpp"

namespace dpo::kernel {

struct ProbeReport {
    std::vector<features::Finding> findings;  // one per feature asked about
    std::size_t loaded = 0;     // found in /sys/module: nothing sent
    std::size_t messages = 0;   // netlink requests sent
    std::string device;         // where the tc probe ran ("" when it did not)
};

// Checks `wanted`: each in /sys/module first, the rest on `uplink` (or lo), ct with
// the mapping's zone (`ct_zone`).
ProbeReport probe_features(const std::vector<features::Feature>& wanted, const std::string& uplink,
                           std::uint16_t ct_zone);

// The daemon's view: what was checked, and what it means for the engine. Each feature
// is asked about once per run; a reload that needs a stage the start did not (a `nat`
// section added) checks that stage's features then.
class KernelFeatures {
public:
    // Checks what `m` needs and was not checked yet, logs each missing feature with its
    // effect (kernel-feature-missing) and the probe's cost (kernel-features). False: a
    // core feature is missing (logged: startup-refused); the caller must not start.
    bool check(const Mapping& m);
    // The mapping the engine runs with (without the VXLAN stage: no EVPN / ACI interface).
    Mapping admit(Mapping m) const { return features::admit(std::move(m), verdict_); }
    // The NAT stage may run.
    bool nat() const { return verdict_.nat; }
    const features::Verdict& verdict() const { return verdict_; }

private:
    std::vector<features::Finding> findings_;  // every feature checked so far
    features::Verdict verdict_;
};

}  // namespace dpo::kernel

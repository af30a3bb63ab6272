// SPDX-License-Identifier: GPL-2.0-or-later
// Run by the lab (scenario metrics): the named counters exactly as kernel::counters()
// returns them for a mapping file (the call `dpoffloadctl counters` makes), one JSON
// object a line, so the scenario compares them with `tc -s actions show`.
//   counters-probe MAPPING.json
// Exit 0 read, 1 the mapping or the kernel refused.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/mapping_loader.hpp"
#include "kernel/action_stats.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: counters-probe MAPPING.json\n");
        return 2;
    }
    auto m = dpo::load_mapping(argv[1]);
    if (!m) {
        std::fprintf(stderr, "counters-probe: mapping refused\n");
        return 1;
    }
    auto c = dpo::kernel::counters(*m);
    if (!c) {
        std::fprintf(stderr, "counters-probe: %s\n", c.error().c_str());
        return 1;
    }
    for (const auto& x : *c) {
        nlohmann::json j = {{"kind", x.kind},       {"name", x.name},   {"index", x.index},
                            {"packets", x.packets}, {"bytes", x.bytes}, {"device", x.device},
                            {"detail", x.detail}};
        if (x.hw_packets) j["hw_packets"] = *x.hw_packets;
        if (x.hw_bytes) j["hw_bytes"] = *x.hw_bytes;
        std::printf("%s\n", j.dump().c_str());
    }
    return 0;
}

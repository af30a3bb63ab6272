// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The punt path of NAT (docs/nat-plan.md): a subscriber's first packet, which has no
// port chunk to be translated into yet, goes to the daemon; once the daemon has
// pulled a chunk and installed the subscriber's rule, the very same frame goes back
// and runs the uplink's tc ingress again from chain 0, to be translated like the rest.
// The packet is not lost, and its 802.1Q tag survives the trip.
//
// A veth pair, both ends in the daemon's network namespace:
//
//   uplink ingress --mirred egress redirect--> dpo-inject ==> dpo-punt --> socket reads
//   uplink ingress <--mirred ingress redirect-- dpo-inject <== dpo-punt <-- socket writes
//
// tc touches only dpo-inject: the uplink's punt rule sends frames out of it, and its
// clsact ingress hands whatever arrives there to the uplink's ingress. The daemon's
// AF_PACKET socket touches only dpo-punt. Each direction crosses the pair once, in
// its own direction, so the two never mix: a punted frame arrives at dpo-punt (were
// it to arrive at dpo-inject, the rule there would bounce it straight back to the
// uplink), and a re-injected frame leaves dpo-punt, which the socket does not read
// (PACKET_IGNORE_OUTGOING), and arrives at dpo-inject.
//
// Why not a single device: the punted and the re-injected frame would meet in one
// hook (on a dummy device both leave through the same egress) and would have to be
// told apart by a mark that flower cannot match; a veth pair gives each direction
// its own hook and needs no mark.
//
// The frame written back is a new skb built from the bytes: no conntrack entry of the
// first, uncommitted ct pass, no tc chain state. dpo-inject receives it as any NIC
// receives a frame (the kernel moves its tag into metadata), and mirred hands it to
// the uplink's receive path: chain 0, 8021q demux, everything as if from the wire.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/compile/pipeline.hpp"
#include "core/result.hpp"

namespace dpo::kernel {

// The mirred action on dpo-inject's ingress is shared under this index, so
// `tc -s actions show action mirred index 3642753025` counts re-injected frames
// (next to compile::kPuntIndex, 0xd9200000, which counts punted ones).
inline constexpr std::uint32_t kReinjectIndex = compile::kReinjectIndex;

class PuntPort {
public:
    static constexpr const char* kPuntDev = "dpo-punt";      // the daemon's end
    static constexpr const char* kInjectDev = "dpo-inject";  // tc's end

    // Creates the veth pair, or adopts it when a previous run left it (a pair named
    // so that is not a veth pair is refused), brings both ends up with IPv6 disabled
    // (no router solicitation or MLD report may pass for a punted frame) and with the
    // uplink's MTU, and opens the socket on dpo-punt. The pair's two rules belong to the
    // program (compile/nat.cpp, the Punt key) and go in with the others: dpo-inject
    // ingress `mirred ingress redirect dev <uplink>` and dpo-punt ingress `gact drop`
    // (the socket already has its copy: packet taps run before tc ingress, and the
    // stack of dpo-punt has no business with somebody else's frames).
    static Result<std::unique_ptr<PuntPort>> open(const std::string& uplink);
    // Deletes the pair (both ends, with their rules): what `--flush` does for NAT.
    // Returns whether there was a pair to delete.
    static Result<bool> remove();
    ~PuntPort();  // closes the socket; leaves the devices and rules (a restart adopts them)
    PuntPort(const PuntPort&) = delete;
    PuntPort& operator=(const PuntPort&) = delete;

    int fd() const { return fd_; }  // readable when punted frames wait
    // What the uplink's punt rule redirects to: dpo-inject (see above).
    int punt_ifindex() const { return inject_ifindex_; }
    std::string punt_dev() const { return kInjectDev; }

    // The punted frames waiting, oldest first, each with its 802.1Q tag put back into
    // the bytes (from PACKET_AUXDATA). At most kMaxBatch per call, so one burst does
    // not starve the daemon's other events: the fd stays readable while more wait.
    static constexpr std::size_t kMaxBatch = 256;
    Result<std::vector<std::vector<std::uint8_t>>> receive();

    // Puts `frame` (as receive() returned it) back: the uplink's tc ingress sees it
    // again from chain 0. Call it after the rule that handles the frame is in place,
    // or the frame is punted again.
    Result<Done> reinject(const std::vector<std::uint8_t>& frame);

    // Punted frames lost since the last call: dropped by the kernel because the
    // socket's queue was full, or longer than the receive buffer. Each is a first
    // packet the subscriber has to retransmit: worth a log line.
    Result<std::uint32_t> take_lost();

private:
    PuntPort(int fd, int punt_ifindex, int inject_ifindex)
        : fd_(fd), punt_ifindex_(punt_ifindex), inject_ifindex_(inject_ifindex), rx_(kRoom) {}

    // Room for the largest frame a packet socket hands over (a 64 KiB GSO skb),
    // plus the tag put back in front.
    static constexpr std::size_t kRoom = 4 + 65536;

    int fd_;
    int punt_ifindex_;
    int inject_ifindex_;
    std::uint32_t truncated_ = 0;
    std::vector<std::uint8_t> rx_;
};

}  // namespace dpo::kernel

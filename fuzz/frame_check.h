// The gateway-to-client bytes of a ForwardTcp call that the relay decodes
// itself, as fuzz input: the engine of fuzz/frame_fuzz.cc and of its corpus
// replay in tests/relay (relay_unit_test.cc). The call-level behaviour
// (empty, huge and many frames, statuses) is a table-driven test against an
// in-process gateway instead (forward_test.cc ForwardHostileGateway): a
// gRPC round trip per input is too slow for a fuzzer.
//
//   input := header-value NUL frame-bytes   (no NUL: all header value)
//
// header-value is a response x-osh-tunnel-ext value (common/tunnel_ext.h);
// frame-bytes one serialized TcpForwardFrame, decoded as both generations'
// message types (proto/openshell.proto, proto/openshell_0_1.proto). Rules:
//   - tunnel_ext::Parse() turns on only tokens the value holds (letter case
//     and blanks aside), and Parse(Format(x)) == x;
//   - a frame either fails to decode in both generations or decodes in
//     both to the same payload kind and data bytes (the relay reads
//     `data = 2` the same way for both), never more data than input bytes;
//   - what the relay does with it (relay/forward.cc OnReadDone: data,
//     the target's FIN when fin-frame is on, else skipped) is the same for
//     both generations, and a data frame re-encoded decodes to the same bytes.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/tunnel_ext.h"
#include "openshell.pb.h"
#include "openshell_0_1.pb.h"

namespace osh::fuzz {

namespace detail {

enum class FrameAction { kNotDecoded, kData, kFin, kSkip };

template <class Frame>
FrameAction frame_action(const std::string& bytes, bool fin_frame, std::string* data) {
  Frame f;
  if (!f.ParseFromString(bytes)) return FrameAction::kNotDecoded;
  if (f.payload_case() != Frame::kData) return FrameAction::kSkip;
  *data = f.data();
  if (!data->empty()) return FrameAction::kData;
  return fin_frame ? FrameAction::kFin : FrameAction::kSkip;
}

inline std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace detail

/// check_frame() - the rules above for one input; "" or the broken rule.
inline std::string check_frame(std::span<const uint8_t> input) {
  using namespace detail;
  const std::string_view all(reinterpret_cast<const char*>(input.data()), input.size());
  const size_t nul = all.find('\0');
  const std::string_view header = all.substr(0, nul);
  const std::string frame = nul == std::string_view::npos ? std::string() : std::string(all.substr(nul + 1));

  const tunnel_ext::Extensions ext = tunnel_ext::Parse(header);
  const std::string h = lower(header);
  if ((ext.connect_ack && h.find(tunnel_ext::kConnectAck) == std::string::npos) ||
      (ext.fin_frame && h.find(tunnel_ext::kFinFrame) == std::string::npos) ||
      (ext.relay_error && h.find(tunnel_ext::kRelayError) == std::string::npos))
    return "an extension turned on that the header value does not name";
  if (tunnel_ext::Parse(tunnel_ext::Format(ext)) != ext) return "Parse(Format(x)) != x";

  std::string d00, d01;
  const FrameAction a00 = frame_action<openshell::v1::TcpForwardFrame>(frame, ext.fin_frame, &d00);
  const FrameAction a01 = frame_action<openshell::v1::g01::TcpForwardFrame>(frame, ext.fin_frame, &d01);
  if (a00 != a01) return "the generations' frame types decode the frame differently";
  if (d00 != d01) return "the generations' frame types decode different data";
  if (d00.size() > frame.size()) return "more data than frame bytes";
  if (a00 == FrameAction::kData) {
    openshell::v1::TcpForwardFrame again;
    again.set_data(d00);
    std::string out;
    if (!again.SerializeToString(&out) ||
        frame_action<openshell::v1::g01::TcpForwardFrame>(out, ext.fin_frame, &d01) != FrameAction::kData ||
        d01 != d00)
      return "a data frame does not survive re-encoding";
  }
  return "";
}

}  // namespace osh::fuzz

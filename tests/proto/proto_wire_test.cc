// Pins proto/openshell.proto to upstream's wire format: every field we
// declare must have upstream's number, type, label and oneof (from
// upstream_wire_fields.tsv, generated from upstream's descriptors at commit
// 2f7fb6559), and the fields that matter most are also pinned by hand, so a
// renumbering fails here even if the data file were edited along with it.
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "openshell.pb.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;

struct Row {
  int number;
  std::string type, label, oneof;
};

// Upstream keeps ObjectMeta in openshell.datamodel.v1; our subset keeps it in
// openshell.v1 (names and packages do not reach the wire).
std::string local_name(const std::string& upstream) {
  const std::string dm = "openshell.datamodel.v1.";
  return upstream.rfind(dm, 0) == 0 ? "openshell.v1." + upstream.substr(dm.size()) : upstream;
}

std::map<std::string, std::map<std::string, Row>> load_tsv() {
  std::map<std::string, std::map<std::string, Row>> out;
  std::ifstream in(OSH_WIRE_TSV);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> col;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, '\t')) col.push_back(c);
    if (col.size() < 3 || col[0] != "field") continue;
    auto& msg = out[local_name(col[1])];  // an "(empty)" row still names the message
    if (col[2] == "(empty)") continue;
    col.resize(8);
    msg[col[2]] = Row{std::stoi(col[3]), col[4], col[5], col[6]};
  }
  return out;
}

std::string type_name(const FieldDescriptor* f) {
  switch (f->type()) {
    case FieldDescriptor::TYPE_MESSAGE: return "message";
    case FieldDescriptor::TYPE_ENUM: return "enum";
    default: return f->type_name();
  }
}

TEST(ProtoWire, EveryDeclaredFieldMatchesUpstream) {
  auto upstream = load_tsv();
  ASSERT_GT(upstream.size(), 20u) << "could not read " << OSH_WIRE_TSV;
  const auto* file = openshell::v1::TcpForwardFrame::descriptor()->file();
  int checked = 0;
  for (int i = 0; i < file->message_type_count(); ++i) {
    const Descriptor* m = file->message_type(i);
    auto it = upstream.find(m->full_name());
    ASSERT_NE(it, upstream.end()) << m->full_name() << " is not an upstream message";
    for (int j = 0; j < m->field_count(); ++j) {
      const FieldDescriptor* f = m->field(j);
      if (m->name() == "Sandbox" && f->name() == "legacy_phase") {
        EXPECT_EQ(f->number(), 4);  // pre-v0.0.53 Sandbox.phase; reserved upstream since
        continue;
      }
      auto fr = it->second.find(f->name());
      ASSERT_NE(fr, it->second.end()) << m->full_name() << "." << f->name() << " is not upstream";
      EXPECT_EQ(f->number(), fr->second.number) << m->full_name() << "." << f->name();
      EXPECT_EQ(type_name(f), fr->second.type) << m->full_name() << "." << f->name();
      EXPECT_EQ(f->is_repeated() ? "repeated" : "optional", fr->second.label)
          << m->full_name() << "." << f->name();
      const auto* oneof = f->real_containing_oneof();
      EXPECT_EQ(oneof ? oneof->name() : "", fr->second.oneof) << m->full_name() << "." << f->name();
      ++checked;
    }
  }
  EXPECT_GE(checked, 80);  // every field of the subset (80 today)
}

TEST(ProtoWire, CriticalFieldNumbersPinned) {
  auto num = [](const Descriptor* d, const char* field) {
    const FieldDescriptor* f = d->FindFieldByName(field);
    return f ? f->number() : -1;
  };
  using namespace openshell::v1;
  EXPECT_EQ(num(TcpForwardInit::descriptor(), "sandbox_id"), 1);
  EXPECT_EQ(num(TcpForwardInit::descriptor(), "service_id"), 4);
  EXPECT_EQ(num(TcpForwardInit::descriptor(), "ssh"), 5);
  EXPECT_EQ(num(TcpForwardInit::descriptor(), "tcp"), 6);
  EXPECT_EQ(num(TcpForwardInit::descriptor(), "authorization_token"), 7);
  EXPECT_EQ(num(TcpForwardFrame::descriptor(), "init"), 1);
  EXPECT_EQ(num(TcpForwardFrame::descriptor(), "data"), 2);
  EXPECT_EQ(num(TcpRelayTarget::descriptor(), "host"), 1);
  EXPECT_EQ(num(TcpRelayTarget::descriptor(), "port"), 2);
  EXPECT_EQ(num(CreateSshSessionResponse::descriptor(), "token"), 2);
  EXPECT_EQ(num(CreateSshSessionResponse::descriptor(), "expires_at_ms"), 8);
  EXPECT_EQ(num(Sandbox::descriptor(), "metadata"), 1);
  EXPECT_EQ(num(Sandbox::descriptor(), "status"), 3);
  EXPECT_EQ(num(SandboxStatus::descriptor(), "phase"), 6);
  EXPECT_EQ(num(ObjectMeta::descriptor(), "id"), 1);
  EXPECT_EQ(num(ObjectMeta::descriptor(), "name"), 2);
  EXPECT_EQ(num(RelayOpen::descriptor(), "channel_id"), 1);
  EXPECT_EQ(num(RelayOpen::descriptor(), "ssh"), 2);
  EXPECT_EQ(num(RelayOpen::descriptor(), "tcp"), 3);
  EXPECT_EQ(num(RelayOpen::descriptor(), "service_id"), 5);
  EXPECT_EQ(num(RelayFrame::descriptor(), "init"), 1);
  EXPECT_EQ(num(RelayFrame::descriptor(), "data"), 2);
  EXPECT_EQ(num(GatewayMessage::descriptor(), "relay_open"), 4);
  EXPECT_EQ(num(SupervisorMessage::descriptor(), "relay_open_result"), 3);
  EXPECT_EQ(SANDBOX_PHASE_READY, 2);
  EXPECT_EQ(SERVICE_STATUS_HEALTHY, 1);
}

TEST(ProtoWire, ServiceMethodPaths) {
  const auto* svc = openshell::v1::TcpForwardFrame::descriptor()->file()->FindServiceByName("OpenShell");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(svc->full_name(), "openshell.v1.OpenShell");  // gRPC path /openshell.v1.OpenShell/...
  const auto* fwd = svc->FindMethodByName("ForwardTcp");
  ASSERT_NE(fwd, nullptr);
  EXPECT_TRUE(fwd->client_streaming());
  EXPECT_TRUE(fwd->server_streaming());
  for (const char* m : {"Health", "GetSandbox", "ListSandboxes", "CreateSshSession",
                        "RevokeSshSession", "ConnectSupervisor", "RelayStream"})
    EXPECT_NE(svc->FindMethodByName(m), nullptr) << m;
}

}  // namespace

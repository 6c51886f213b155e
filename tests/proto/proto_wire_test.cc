// Pins both generations of the wire to upstream: proto/openshell.proto
// (0.0.11x) against upstream_wire_fields.tsv (upstream 2f7fb6559) and
// proto/openshell_0_1.proto (0.1.x) against upstream_wire_fields_0_1.tsv
// (upstream dde55299; copies of ../shared/docs/openshell-wire-fields*.tsv).
// Every field we declare must have upstream's number, type, label, oneof and
// message/enum type, must not use a number upstream reserved or removed, and
// every enum value must match; the fields that matter most are also pinned by
// hand, so a renumbering fails here even if a data file were edited along
// with it.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "openshell.pb.h"
#include "openshell_0_1.pb.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;

struct Row {
  int number;
  std::string type, label, oneof, type_name;
};

// One upstream field table, keyed by message short name then field name.
// Upstream spreads the messages over openshell.v1 and openshell.datamodel.v1;
// our subsets keep them in openshell.v1 (0.0) and openshell.v1.g01 (0.1).
// Short names are unique across those packages, and packages never reach the
// wire, so the short name is the key.
struct Table {
  std::map<std::string, std::map<std::string, Row>> fields;  // message -> field -> row
  std::map<std::string, std::map<std::string, int>> enums;   // enum -> value -> number
  std::set<std::string> retired;  // "Message.field" reserved or removed upstream
};

std::string short_name(const std::string& full) {
  const auto dot = full.rfind('.');
  return dot == std::string::npos ? full : full.substr(dot + 1);
}

Table load_tsv(const char* path) {
  Table t;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> col;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, '\t')) col.push_back(c);
    if (col.size() < 3) continue;
    col.resize(8);
    const std::string msg = short_name(col[1]);
    if (col[0] == "field") {
      auto& m = t.fields[msg];  // an "(empty)" row still names the message
      if (col[2] == "(empty)") continue;
      // Labels like "optional (proto3 explicit presence)" are singular fields.
      const std::string label = col[5].rfind("repeated", 0) == 0 ? "repeated" : "optional";
      m[col[2]] = Row{std::stoi(col[3]), col[4], label, col[6], short_name(col[7])};
    } else if (col[0] == "enum") {
      t.enums[msg][col[2]] = std::stoi(col[3]);
    } else if (col[0] == "reserved" || col[0] == "gone") {
      t.retired.insert(msg + "." + col[2]);
    }
  }
  return t;
}

std::string type_name(const FieldDescriptor* f) {
  switch (f->type()) {
    case FieldDescriptor::TYPE_MESSAGE: return "message";
    case FieldDescriptor::TYPE_ENUM: return "enum";
    default: return f->type_name();
  }
}

// Every message reachable from the file's own messages (imported ones
// included, so a message shared by both generations is checked against
// each generation's table), minus protobuf's well-known types and map entries.
void collect(const Descriptor* m, std::map<std::string, const Descriptor*>* out) {
  if (m->options().map_entry() || m->file()->package() == "google.protobuf") return;
  if (!out->emplace(m->full_name(), m).second) return;
  for (int j = 0; j < m->field_count(); ++j)
    if (m->field(j)->message_type()) collect(m->field(j)->message_type(), out);
}

// Checks every field and enum value of `file` (and of what it references)
// against `table`; returns the number of fields checked.
int check_file(const google::protobuf::FileDescriptor* file, const Table& table) {
  std::map<std::string, const Descriptor*> msgs;
  for (int i = 0; i < file->message_type_count(); ++i) collect(file->message_type(i), &msgs);
  int checked = 0;
  for (const auto& [full, m] : msgs) {
    auto it = table.fields.find(m->name());
    EXPECT_NE(it, table.fields.end()) << full << " is not an upstream message";
    if (it == table.fields.end()) continue;
    for (int j = 0; j < m->field_count(); ++j) {
      const FieldDescriptor* f = m->field(j);
      const std::string where = full + "." + f->name();
      if (m->name() == "Sandbox" && f->name() == "legacy_phase") {
        EXPECT_EQ(f->number(), 4);  // pre-v0.0.53 Sandbox.phase; reserved upstream since
        continue;
      }
      EXPECT_FALSE(table.retired.contains(m->name() + "." + f->name()))
          << where << " is reserved or removed upstream";
      auto fr = it->second.find(f->name());
      EXPECT_NE(fr, it->second.end()) << where << " is not upstream";
      if (fr == it->second.end()) continue;
      EXPECT_EQ(f->number(), fr->second.number) << where;
      EXPECT_EQ(type_name(f), fr->second.type) << where;
      EXPECT_EQ(f->is_repeated() ? "repeated" : "optional", fr->second.label) << where;
      const auto* oneof = f->real_containing_oneof();
      EXPECT_EQ(oneof ? oneof->name() : "", fr->second.oneof) << where;
      if (!fr->second.type_name.empty() && !f->is_map()) {
        const std::string ours = f->message_type() ? f->message_type()->name()
                                 : f->enum_type()  ? f->enum_type()->name()
                                                   : "";
        EXPECT_EQ(ours, fr->second.type_name) << where;
      }
      ++checked;
    }
  }
  for (int i = 0; i < file->enum_type_count(); ++i) {
    const auto* e = file->enum_type(i);
    auto it = table.enums.find(e->name());
    EXPECT_NE(it, table.enums.end()) << e->full_name() << " is not an upstream enum";
    if (it == table.enums.end()) continue;
    EXPECT_EQ(static_cast<size_t>(e->value_count()), it->second.size()) << e->full_name();
    for (int v = 0; v < e->value_count(); ++v) {
      auto vr = it->second.find(e->value(v)->name());
      EXPECT_NE(vr, it->second.end()) << e->value(v)->full_name() << " is not upstream";
      if (vr != it->second.end()) EXPECT_EQ(e->value(v)->number(), vr->second) << e->value(v)->full_name();
    }
  }
  return checked;
}

TEST(ProtoWire, Generation00MatchesUpstream0011x) {
  const Table upstream = load_tsv(OSH_WIRE_TSV);
  ASSERT_GT(upstream.fields.size(), 20u) << "could not read " << OSH_WIRE_TSV;
  const int checked = check_file(openshell::v1::TcpForwardFrame::descriptor()->file(), upstream);
  EXPECT_GE(checked, 80);  // every field of the subset (80 today)
}

TEST(ProtoWire, Generation01MatchesUpstream01x) {
  const Table upstream = load_tsv(OSH_WIRE_TSV_0_1);
  ASSERT_GT(upstream.fields.size(), 40u) << "could not read " << OSH_WIRE_TSV_0_1;
  const int checked = check_file(openshell::v1::g01::TcpForwardFrame::descriptor()->file(), upstream);
  EXPECT_GE(checked, 90);
}

// The generations reuse numbers with other types: these are the clashes a
// mixed-up encoding would hit (protocol-0.1 §2), pinned by hand.
TEST(ProtoWire, Generation01ClashesPinned) {
  namespace g = openshell::v1::g01;
  using google::protobuf::FieldDescriptor;
  const auto* lr = g::ListSandboxesRequest::descriptor();
  EXPECT_EQ(lr->FindFieldByName("page_token")->number(), 2);
  EXPECT_EQ(lr->FindFieldByName("page_token")->type(), FieldDescriptor::TYPE_STRING);
  EXPECT_EQ(lr->FindFieldByName("workspace_scope")->number(), 4);
  EXPECT_EQ(lr->FindFieldByName("workspace_scope")->message_type()->name(), "WorkspaceSelector");
  EXPECT_EQ(g::GetSandboxRequest::descriptor()->FindFieldByName("workspace_scope")->number(), 2);
  EXPECT_EQ(g::CreateSshSessionRequest::descriptor()->FindFieldByName("sandbox")->number(), 1);
  EXPECT_EQ(g::CreateSshSessionRequest::descriptor()->FindFieldByName("workspace_scope")->number(), 3);
  EXPECT_EQ(g::CreateSshSessionResponse::descriptor()->FindFieldByName("expiration_time")->number(), 108);
  EXPECT_EQ(g::RevokeSshSessionResponse::descriptor()->FindFieldByName("outcome")->number(), 2);
  EXPECT_EQ(g::TcpForwardInit::descriptor()->FindFieldByName("sandbox")->number(), 1);
  EXPECT_EQ(g::TcpForwardInit::descriptor()->FindFieldByName("workspace")->number(), 3);
  EXPECT_EQ(g::TcpForwardInit::descriptor()->FindFieldByName("workspace")->type(), FieldDescriptor::TYPE_STRING);
  EXPECT_EQ(g::SessionAccepted::descriptor()->FindFieldByName("heartbeat_interval")->number(), 102);
  EXPECT_EQ(g::SANDBOX_PHASE_COMPLETED, 9);
  EXPECT_EQ(g::DELETION_OUTCOME_ALREADY_ABSENT, 3);
  // TcpForwardFrame's data frames are the same bytes in both generations.
  EXPECT_EQ(g::TcpForwardFrame::descriptor()->FindFieldByName("data")->number(),
            openshell::v1::TcpForwardFrame::descriptor()->FindFieldByName("data")->number());
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

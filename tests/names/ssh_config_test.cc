// names/ssh_config: the Include target's text, the managed block, the
// known-hosts decision (pure), and the *_at file operations (issue 14.1).
#include "names/ssh_config.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace fs = std::filesystem;
using osh::names::SshConfigInclude;
using osh::names::SshHost;

namespace {

constexpr char kFp[] = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

TEST(SshConfigInclude, RendersOnlyTheServedNames) {
  const std::string t =
      SshConfigInclude::render_include({{"demo.local", kFp}, {"old.local", ""}}, "/usr/bin/openshell-tunnel");
  EXPECT_EQ(t.find("*"), std::string::npos) << "no wildcard host: " << t;
  EXPECT_NE(t.find("\nHost demo.local\n"), std::string::npos);
  EXPECT_NE(t.find("\nHost old.local\n"), std::string::npos);
  // The pinned host: strict, checked through the KnownHostsCommand.
  const std::string demo = t.substr(t.find("Host demo.local"), t.find("Host old.local") - t.find("Host demo.local"));
  EXPECT_NE(demo.find("StrictHostKeyChecking yes"), std::string::npos) << demo;
  EXPECT_NE(demo.find("KnownHostsCommand \"/usr/bin/openshell-tunnel\" known-hosts " + std::string(kFp) +
                      " %f %H %t %K\n"), std::string::npos) << demo;
  EXPECT_EQ(demo.find("StrictHostKeyChecking no"), std::string::npos);
  // Without a fingerprint: that host alone is not pinned.
  const std::string old = t.substr(t.find("Host old.local"));
  EXPECT_NE(old.find("StrictHostKeyChecking no"), std::string::npos) << old;
  EXPECT_EQ(old.find("KnownHostsCommand"), std::string::npos);
}

TEST(SshConfigInclude, NoHostsNoBlocks) {
  const std::string t = SshConfigInclude::render_include({}, "/bin/x");
  EXPECT_EQ(t.find("\nHost "), std::string::npos) << t;
}

TEST(SshConfigInclude, LeavesOutBadNamesAndFingerprints) {
  const std::string t = SshConfigInclude::render_include(
      {{"a b.local", kFp}, {"x.local\n  ProxyCommand evil", kFp}, {"ok.local", "SHA256:short Match all"}},
      "/opt/o%s/openshell-tunnel");
  EXPECT_EQ(t.find("evil"), std::string::npos) << t;
  EXPECT_EQ(t.find("a b.local"), std::string::npos) << t;
  EXPECT_EQ(t.find("Match"), std::string::npos) << t;
  EXPECT_NE(t.find("Host ok.local"), std::string::npos);
  EXPECT_EQ(t.find("  KnownHostsCommand"), std::string::npos) << "an invalid fingerprint counts as none";
  EXPECT_NE(SshConfigInclude::render_include({{"p.local", kFp}}, "/opt/o%s/x").find("\"/opt/o%%s/x\""),
            std::string::npos);
  EXPECT_THROW(SshConfigInclude::render_include({}, "relative/x"), std::invalid_argument);
  EXPECT_THROW(SshConfigInclude::render_include({}, "/a\"b"), std::invalid_argument);
}

TEST(SshConfigInclude, Fingerprints) {
  EXPECT_TRUE(SshConfigInclude::valid_fingerprint(kFp));
  EXPECT_FALSE(SshConfigInclude::valid_fingerprint(""));
  EXPECT_FALSE(SshConfigInclude::valid_fingerprint("MD5:aa:bb"));
  EXPECT_FALSE(SshConfigInclude::valid_fingerprint(std::string(kFp) + "="));
  EXPECT_FALSE(SshConfigInclude::valid_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2 "));
}

TEST(SshConfigInclude, KnownHostsLineOnlyForTheGatewaysKey) {
  EXPECT_EQ(SshConfigInclude::known_hosts_line(kFp, kFp, "demo.local", "ssh-ed25519", "AAAAC3Nza"),
            "demo.local ssh-ed25519 AAAAC3Nza\n");
  EXPECT_FALSE(SshConfigInclude::known_hosts_line(kFp, "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2t",
                                                  "demo.local", "ssh-ed25519", "AAAA"));
  EXPECT_FALSE(SshConfigInclude::known_hosts_line("", "", "demo.local", "ssh-ed25519", "AAAA"));
  EXPECT_FALSE(SshConfigInclude::known_hosts_line(kFp, kFp, "demo.local\nevil", "ssh-ed25519", "AAAA"));
  EXPECT_FALSE(SshConfigInclude::known_hosts_line(kFp, kFp, "demo.local", "ssh-ed25519", ""));
}

TEST(SshConfigInclude, BlockAtTheTopReplacesTheOldOne) {
  const std::string once = SshConfigInclude::with_block("Host x\n  User y\n", "/h/.ssh/openshell-tunnel.conf");
  EXPECT_EQ(once.rfind("# BEGIN openshell-tunnel", 0), 0u) << once;
  EXPECT_NE(once.find("Include \"/h/.ssh/openshell-tunnel.conf\"\n"), std::string::npos);
  EXPECT_EQ(SshConfigInclude::with_block(once, "/h/.ssh/openshell-tunnel.conf"), once);
  EXPECT_EQ(SshConfigInclude::include_path("/h/.ssh/config"), fs::path("/h/.ssh/openshell-tunnel.conf"));
}

class SshConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/osh-sshcfg-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    dirfd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(dirfd_, 0);
  }
  void TearDown() override {
    ::close(dirfd_);
    fs::remove_all(dir_);
  }
  static std::string read(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  fs::path dir_;
  int dirfd_ = -1;
};

TEST_F(SshConfigFiles, InstallCreates0600AndRemoveUndoes) {
  const fs::path cfg = dir_ / "config";
  SshConfigInclude::install_at(dirfd_, cfg, "Host demo.local\n");
  struct stat st {};
  ASSERT_EQ(::stat(cfg.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((dir_ / "openshell-tunnel.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(read(dir_ / "openshell-tunnel.conf"), "Host demo.local\n");
  SshConfigInclude::write_include_at(dirfd_, cfg, "Host other.local\n");
  EXPECT_EQ(read(dir_ / "openshell-tunnel.conf"), "Host other.local\n");
  SshConfigInclude::remove_at(dirfd_, cfg);
  EXPECT_EQ(read(cfg), "");
  EXPECT_FALSE(fs::exists(dir_ / "openshell-tunnel.conf"));
  SshConfigInclude::remove_at(dirfd_, cfg);  // idempotent
}

// Issue 14.1: a symlink at ~/.ssh/config (or at the include target) is
// never followed: the file it names stays as it was.
TEST_F(SshConfigFiles, SymlinksAreRefused) {
  const fs::path victim = dir_ / "victim";
  { std::ofstream(victim) << "root only\n"; }
  const fs::path cfg = dir_ / "config";
  fs::create_symlink(victim, cfg);
  EXPECT_THROW(SshConfigInclude::install_at(dirfd_, cfg, "Host demo.local\n"), std::system_error);
  EXPECT_THROW(SshConfigInclude::remove_at(dirfd_, cfg), std::system_error);
  EXPECT_EQ(read(victim), "root only\n");
  EXPECT_FALSE(fs::exists(dir_ / "openshell-tunnel.conf")) << "nothing written before the refusal";
  fs::remove(cfg);
  fs::create_symlink(victim, dir_ / "openshell-tunnel.conf");
  EXPECT_THROW(SshConfigInclude::install_at(dirfd_, cfg, "Host demo.local\n"), std::system_error);
  EXPECT_EQ(read(victim), "root only\n");
}

}  // namespace

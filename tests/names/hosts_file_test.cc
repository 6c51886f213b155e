// HostsFile tests: render/strip on strings, then real files in a temporary
// directory. The bind-mount fallback runs in a forked child with its own
// mount namespace. The machine's /etc/hosts is never touched.
#include "names/hosts_file.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "netns_child.h"

namespace osh::names {
namespace {

namespace fs = std::filesystem;

const std::string kBegin = "# BEGIN openshell-tunnel (managed, do not edit)\n";
const std::string kEnd = "# END openshell-tunnel\n";

const std::vector<HostEntry> kTwo = {
    {"198.18.0.2", {"sbx-1.local"}},
    {"fd00:6f73:6800::2", {"sbx-1.local", "sbx-1"}},
};
const std::string kTwoBlock = kBegin + "198.18.0.2\tsbx-1.local\n" +
                              "fd00:6f73:6800::2\tsbx-1.local sbx-1\n" + kEnd;

TEST(HostsRenderTest, EmptyOriginal) {
  EXPECT_EQ(HostsFile::render("", kTwo), kTwoBlock);
  EXPECT_EQ(HostsFile::render("", {}), kBegin + kEnd);
  EXPECT_EQ(HostsFile::strip(HostsFile::render("", kTwo)), "");
}

TEST(HostsRenderTest, AppendsAndStripRestoresByteForByte) {
  const std::string orig =
      "127.0.0.1\tlocalhost\n"
      "::1     localhost ip6-localhost   ip6-loopback\r\n"  // odd spacing and CRLF survive
      "\n"
      "# a comment  \n"
      "  10.0.0.1 spaced.example\t \n";
  const std::string out = HostsFile::render(orig, kTwo);
  EXPECT_EQ(out, orig + kTwoBlock);
  EXPECT_EQ(HostsFile::strip(out), orig);
}

TEST(HostsRenderTest, ReplacesInPlaceKeepingOtherLines) {
  const std::string before = "127.0.0.1 localhost\n# mine\n";
  const std::string after = "10.1.1.1 after.example\n# tail without newline";
  const std::string old_block = kBegin + "198.18.0.9\told.local\n" + kEnd;
  const std::string orig = before + old_block + after;

  const std::string out = HostsFile::render(orig, kTwo);
  EXPECT_EQ(out, before + kTwoBlock + after);
  EXPECT_EQ(HostsFile::strip(out), before + after);
  EXPECT_EQ(HostsFile::strip(orig), before + after);
  // Rendering again is stable.
  EXPECT_EQ(HostsFile::render(out, kTwo), out);
}

TEST(HostsRenderTest, OriginalWithoutTrailingNewline) {
  const std::string orig = "127.0.0.1 localhost";
  const std::string out = HostsFile::render(orig, kTwo);
  EXPECT_EQ(out, orig + "\n" + kTwoBlock);
  EXPECT_EQ(HostsFile::strip(out), orig + "\n");  // documented: the line got its terminator
}

TEST(HostsRenderTest, BlockAtEndWithoutNewline) {
  const std::string orig = "a b\n" + kBegin + "1.2.3.4\tx\n# END openshell-tunnel";
  EXPECT_EQ(HostsFile::strip(orig), "a b\n");
  EXPECT_EQ(HostsFile::render(orig, kTwo), "a b\n" + kTwoBlock);
}

TEST(HostsRenderTest, MarkersToleratesTrailingBlanksAndCrlf) {
  const std::string orig = "x y\n# BEGIN openshell-tunnel (managed, do not edit)  \r\n1.2.3.4\tz\r\n"
                           "# END openshell-tunnel\t\r\nlast line\n";
  EXPECT_EQ(HostsFile::strip(orig), "x y\nlast line\n");
}

TEST(HostsRenderTest, SeveralBlocksMerge) {
  const std::string b1 = kBegin + "1.1.1.1\ta\n" + kEnd;
  const std::string b2 = kBegin + "2.2.2.2\tb\n" + kEnd;
  const std::string orig = "one\n" + b1 + "two\n" + b2 + "three\n";
  EXPECT_EQ(HostsFile::render(orig, kTwo), "one\n" + kTwoBlock + "two\nthree\n");
  EXPECT_EQ(HostsFile::strip(orig), "one\ntwo\nthree\n");
}

TEST(HostsRenderTest, UnmatchedMarkersAreLeftAlone) {
  // BEGIN without END: not a block, kept verbatim; a new block is appended.
  const std::string orphan_begin = "one\n" + kBegin + "1.1.1.1\ta\n";
  EXPECT_EQ(HostsFile::strip(orphan_begin), orphan_begin);
  EXPECT_EQ(HostsFile::render(orphan_begin, kTwo), orphan_begin + kTwoBlock);
  EXPECT_EQ(HostsFile::strip(HostsFile::render(orphan_begin, kTwo)), orphan_begin);

  // END without BEGIN: kept.
  const std::string orphan_end = "one\n" + kEnd + "two\n";
  EXPECT_EQ(HostsFile::strip(orphan_end), orphan_end);

  // BEGIN, BEGIN, END: the first BEGIN is an orphan, the second starts the block.
  const std::string nested = kBegin + "keep\n" + kBegin + "drop\n" + kEnd;
  EXPECT_EQ(HostsFile::strip(nested), kBegin + "keep\n");

  // A marker-like line that is not exactly a marker is an ordinary line.
  const std::string similar = "#BEGIN openshell-tunnel\n# END openshell-tunnel-x\n";
  EXPECT_EQ(HostsFile::strip(similar), similar);
}

TEST(HostsRenderTest, RejectsInvalidEntries) {
  const std::vector<std::vector<HostEntry>> bad = {
      {{"", {"a"}}},
      {{"1.2.3.4", {}}},
      {{"1.2.3.4", {""}}},
      {{"1.2.3.4", {"a b"}}},
      {{"1.2.3.4", {"a\nb"}}},
      {{"1.2.3.4\n5.6.7.8", {"a"}}},
      {{"1.2.3.4", {"a#b"}}},
      {{"1.2.3.4", {"a\tb"}}},
  };
  for (const auto& entries : bad) EXPECT_THROW(HostsFile::render("", entries), std::invalid_argument);
}

// A temporary directory removed at the end of the test.
class HostsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "osh-hosts-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static void write(const fs::path& p, const std::string& s) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << s;
  }
  static struct stat stat_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st;
  }
  // Names in the directory other than `keep` (temp files must not linger).
  std::vector<std::string> others(const std::string& keep) const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename() != keep) names.push_back(e.path().filename().string());
    return names;
  }

  fs::path dir_;
};

TEST_F(HostsFileTest, WriteCreatesMissingFile) {
  const fs::path p = dir_ / "hosts";
  HostsFile h(p);
  h.write_block(kTwo);
  EXPECT_EQ(read(p), kTwoBlock);
  EXPECT_EQ(stat_of(p).st_mode & 07777, 0644u);
  EXPECT_TRUE(others("hosts").empty());
}

TEST_F(HostsFileTest, WriteReplaceRemoveKeepsOtherLinesAndMode) {
  const fs::path p = dir_ / "hosts";
  const std::string orig = "127.0.0.1\tlocalhost\n::1 localhost\r\n# user comment\n";
  write(p, orig);
  ASSERT_EQ(::chmod(p.c_str(), 0640), 0);

  HostsFile h(p);
  h.write_block(kTwo);
  EXPECT_EQ(read(p), orig + kTwoBlock);
  EXPECT_EQ(stat_of(p).st_mode & 07777, 0640u);

  // The user adds a line after our block; replacing keeps it.
  write(p, read(p) + "10.9.9.9 later.example\n");
  h.write_block({{"198.18.0.3", {"sbx-2.local"}}});
  EXPECT_EQ(read(p), orig + kBegin + "198.18.0.3\tsbx-2.local\n" + kEnd + "10.9.9.9 later.example\n");

  h.remove_block();
  EXPECT_EQ(read(p), orig + "10.9.9.9 later.example\n");
  EXPECT_EQ(stat_of(p).st_mode & 07777, 0640u);
  EXPECT_TRUE(others("hosts").empty());
}

TEST_F(HostsFileTest, WriteIsAtomicRenameAndSkipsNoop) {
  const fs::path p = dir_ / "hosts";
  write(p, "127.0.0.1 localhost\n");
  const ino_t before = stat_of(p).st_ino;
  HostsFile h(p);
  h.write_block(kTwo);
  const ino_t after = stat_of(p).st_ino;
  EXPECT_NE(before, after) << "expected a new inode (temp file renamed over)";
  h.write_block(kTwo);  // unchanged content: no write at all
  EXPECT_EQ(stat_of(p).st_ino, after);
}

TEST_F(HostsFileTest, RemoveIsNoopWithoutBlockOrFile) {
  const fs::path p = dir_ / "hosts";
  HostsFile h(p);
  h.remove_block();
  EXPECT_FALSE(fs::exists(p)) << "remove_block must not create the file";
  write(p, "127.0.0.1 localhost");
  const ino_t ino = stat_of(p).st_ino;
  h.remove_block();
  EXPECT_EQ(read(p), "127.0.0.1 localhost");
  EXPECT_EQ(stat_of(p).st_ino, ino);
}

// Issue 14.1: a symlink at the hosts file's name is refused, never followed
// (root would otherwise write its block into whatever file the link names).
TEST_F(HostsFileTest, RefusesSymlink) {
  const fs::path real = dir_ / "real-hosts";
  const fs::path link = dir_ / "hosts";
  write(real, "127.0.0.1 localhost\n");
  fs::create_symlink(real, link);
  for (int op = 0; op < 2; ++op) {
    try {
      if (op == 0) HostsFile(link).write_block(kTwo);
      else HostsFile(link).remove_block();
      FAIL() << "no exception for op " << op;
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), ELOOP);
      EXPECT_NE(std::string(e.what()).find("symbolic link"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(read(real), "127.0.0.1 localhost\n");
  EXPECT_THROW(replace_text_file(link, "x"), std::system_error);
  EXPECT_THROW(read_text_file(link), std::system_error);
  EXPECT_EQ(read(real), "127.0.0.1 localhost\n");
}

TEST_F(HostsFileTest, RefusesNonRegularFile) {
  const fs::path fifo = dir_ / "hosts";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  try {
    HostsFile(fifo).write_block(kTwo);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  const fs::path d = dir_ / "hosts.d";
  fs::create_directory(d);
  EXPECT_THROW(HostsFile(d).write_block(kTwo), std::system_error);
  EXPECT_TRUE(fs::is_directory(d));
}

TEST_F(HostsFileTest, ErrorsNameThePath) {
  const fs::path p = dir_ / "no-such-dir" / "hosts";
  try {
    HostsFile(p).write_block(kTwo);
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
  }
}

// /etc/hosts under `ip netns exec` is a bind mount: rename onto it fails with
// EBUSY, and the file must be rewritten in place. Reproduced with a bind
// mount in a private mount namespace of a forked child.
TEST_F(HostsFileTest, BindMountedFileIsRewrittenInPlace) {
  OSH_REQUIRE_PRIVILEGES();
  const fs::path src = dir_ / "netns-hosts";
  const fs::path target = dir_ / "hosts";
  write(src, "127.0.0.1 netns-localhost\n");
  write(target, "127.0.0.1 host-localhost\n");
  OSH_IN_NEW_NETNS(CLONE_NEWNS, [&] {
    osh::tun::testing::Failures f;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      return std::string("make / private: ") + std::strerror(errno);
    if (::mount(src.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0)
      return std::string("bind mount: ") + std::strerror(errno);
    const ino_t ino = stat_of(target).st_ino;
    HostsFile h(target);
    h.write_block(kTwo);
    CHECK_IN_CHILD(f, read(target) == "127.0.0.1 netns-localhost\n" + kTwoBlock, read(target));
    CHECK_IN_CHILD(f, stat_of(target).st_ino == ino, "inode changed");
    h.remove_block();
    CHECK_IN_CHILD(f, read(target) == "127.0.0.1 netns-localhost\n", read(target));
    CHECK_IN_CHILD(f, others("hosts").size() == 1, "temporary file left behind");
    return f.str();
  });
  // Outside the child's mount namespace: the bind source got the edits, the
  // underlying target file was never touched.
  EXPECT_EQ(read(src), "127.0.0.1 netns-localhost\n");
  EXPECT_EQ(read(target), "127.0.0.1 host-localhost\n");
}

}  // namespace
}  // namespace osh::names

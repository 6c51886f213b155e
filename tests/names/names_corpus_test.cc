// Replays the committed corpora of fuzz/hosts_fuzz.cc and
// fuzz/ssh_config_fuzz.cc through their rules (fuzz/text_edit_check.h), so
// every seed and every finding turned into a seed runs in the normal build
// (CI: main and ASan+UBSan builds), plus named tests for the findings.
#include <gtest/gtest.h>

#include "fuzz/corpus_files.h"
#include "fuzz/text_edit_check.h"

namespace osh::fuzz {
namespace {

const std::string kBegin = "# BEGIN openshell-tunnel (managed, do not edit)\n";
const std::string kEnd = "# END openshell-tunnel\n";

std::vector<uint8_t> input(uint8_t selector, const std::string& text) {
  std::vector<uint8_t> b{selector};
  b.insert(b.end(), text.begin(), text.end());
  return b;
}

TEST(NamesCorpus, HostsCorpusKeepsTheRules) {
  const auto files = corpus_files(OSH_HOSTS_CORPUS_DIR);
  for (const auto& [name, bytes] : files) EXPECT_EQ(check_hosts(bytes), "") << name;
  EXPECT_GE(files.size(), 17u);
}

TEST(NamesCorpus, SshConfigCorpusKeepsTheRules) {
  const auto files = corpus_files(OSH_SSH_CONFIG_CORPUS_DIR);
  for (const auto& [name, bytes] : files) EXPECT_EQ(check_ssh_config(bytes), "") << name;
  EXPECT_GE(files.size(), 10u);
}

// Finding (hosts_fuzz's rules): stray markers around our block paired up once the
// block between them was removed, so a second `up` (render) or `down`
// (strip) changed the file again. Now removal repeats until no block is left.
TEST(NamesCorpus, StrayMarkersAroundABlockAreStableAfterOnePass) {
  const std::string ours = kBegin + "198.18.0.2\tsbx-1.local\n" + kEnd;
  const std::string x = ours + kBegin + ours + "user\n" + kEnd;
  const std::string once = names::HostsFile::render(x, kHostsEntrySets[1]);
  EXPECT_EQ(names::HostsFile::render(once, kHostsEntrySets[1]), once);
  EXPECT_EQ(names::HostsFile::strip(names::HostsFile::strip(x)), names::HostsFile::strip(x));
  EXPECT_EQ(check_hosts(input(1, x)), "");
}

}  // namespace
}  // namespace osh::fuzz

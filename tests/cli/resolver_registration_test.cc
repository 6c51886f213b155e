// ResolverRegistration cannot be exercised here (no systemd-resolved on the
// build machines): these tests pin the exact resolvectl argument vectors and
// the process runner that executes them.
#include "cli/resolver_registration.h"

#include <gtest/gtest.h>

#include <string>
#include <system_error>
#include <vector>

namespace osh::cli {
namespace {

using Argv = std::vector<std::string>;

TEST(ResolverRegistration, RegisterCommands) {
  EXPECT_EQ(ResolverRegistration::register_commands("osh0", {"198.18.0.2", "fd00:6f73:6800::2"},
                                                    "local"),
            (std::vector<Argv>{
                {"resolvectl", "dns", "osh0", "198.18.0.2", "fd00:6f73:6800::2"},
                {"resolvectl", "domain", "osh0", "~local"},
                {"resolvectl", "default-route", "osh0", "false"},
            }));
  EXPECT_EQ(ResolverRegistration::register_commands("tun7", {"198.18.0.2"}, "sbx.example.")[1],
            (Argv{"resolvectl", "domain", "tun7", "~sbx.example"}));
}

TEST(ResolverRegistration, RevertCommand) {
  EXPECT_EQ(ResolverRegistration::revert_command("osh0"), (Argv{"resolvectl", "revert", "osh0"}));
}

TEST(ResolverRegistration, RejectsEmptyArguments) {
  EXPECT_THROW(ResolverRegistration("", {"198.18.0.2"}, "local"), std::invalid_argument);
  EXPECT_THROW(ResolverRegistration("osh0", {}, "local"), std::invalid_argument);
  EXPECT_THROW(ResolverRegistration("osh0", {"198.18.0.2"}, "."), std::invalid_argument);
}

TEST(ResolverRegistration, InactiveWithoutResolved) {
  if (ResolverRegistration::available())
    GTEST_SKIP() << "systemd-resolved is running here; not touching its configuration";
  ResolverRegistration reg("osh-test-none", {"198.18.0.2"}, "local");
  EXPECT_FALSE(reg.active());
}

TEST(RunProgram, CapturesExitCodeAndStderr) {
  const ProgramResult r = run_program({"sh", "-c", "echo out; echo 'no such link' >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.stderr_text, "no such link\n");  // stdout is discarded
}

TEST(RunProgram, SuccessAndArgumentsPassedVerbatim) {
  const ProgramResult r = run_program({"sh", "-c", "printf '%s|' \"$@\" >&2", "sh", "~local", "a b", "$X"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.stderr_text, "~local|a b|$X|");
}

TEST(RunProgram, StdinIsDevNull) {
  const ProgramResult r = run_program({"sh", "-c", "cat >&2"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.stderr_text, "");
}

TEST(RunProgram, KilledBySignal) {
  const ProgramResult r = run_program({"sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.exit_code, 128 + 9);
}

TEST(RunProgram, StderrIsCappedAt4KiB) {
  const ProgramResult r = run_program({"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x >&2"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.stderr_text, std::string(4096, 'x'));
}

TEST(RunProgram, MissingProgramThrows) {
  EXPECT_THROW(run_program({"osh-no-such-program-for-test"}), std::system_error);
  EXPECT_THROW(run_program({}), std::invalid_argument);
}

}  // namespace
}  // namespace osh::cli

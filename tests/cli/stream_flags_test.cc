// cli/stream_flags: the flags write relay::ForwardOptions directly, and
// leave relay's defaults alone when not given (issue 13.4: one default per
// setting).
#include "cli/stream_flags.h"

#include <CLI/CLI.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace osh::cli {
namespace {

using namespace std::chrono_literals;

relay::ForwardOptions parse(std::vector<std::string> args) {
  CLI::App app;
  relay::ForwardOptions fo;
  add_stream_flags(&app, fo);
  add_token_idle_flag(&app, fo);
  std::reverse(args.begin(), args.end());  // CLI11 takes them last-first
  app.parse(args);
  return fo;
}

TEST(StreamFlags, DefaultsAreRelays) {
  const relay::ForwardOptions fo = parse({});
  const relay::ForwardOptions relay_default;
  EXPECT_EQ(fo.max_streams_per_sandbox, relay_default.max_streams_per_sandbox);
  EXPECT_EQ(fo.max_streams_per_token, relay_default.max_streams_per_token);
  EXPECT_EQ(fo.queue_timeout, relay_default.queue_timeout);
  EXPECT_EQ(fo.token_idle_timeout, relay_default.token_idle_timeout);
  EXPECT_EQ(fo.max_pending_opens, relay_default.max_pending_opens);
  EXPECT_EQ(fo.max_streams, relay_default.max_streams);
  EXPECT_EQ(fo.open_timeout, relay_default.open_timeout);
  EXPECT_FALSE(fo.connect_settle.has_value());
  EXPECT_TRUE(fo.request_extensions);
}

TEST(StreamFlags, EachFlagWritesItsField) {
  const relay::ForwardOptions fo =
      parse({"--max-streams-per-sandbox", "7", "--max-streams-per-token", "2", "--queue-timeout-ms", "1500",
             "--connect-settle-ms", "0", "--no-tunnel-ext", "--token-idle-s", "3"});
  EXPECT_EQ(fo.max_streams_per_sandbox, 7u);
  EXPECT_EQ(fo.max_streams_per_token, 2u);
  EXPECT_EQ(fo.queue_timeout, 1500ms);
  ASSERT_TRUE(fo.connect_settle.has_value());
  EXPECT_EQ(*fo.connect_settle, 0ms);
  EXPECT_FALSE(fo.request_extensions);
  EXPECT_EQ(fo.token_idle_timeout, 3s);
  EXPECT_FALSE(parse({"--connect-settle-ms", "-1"}).connect_settle.has_value());
  EXPECT_EQ(*parse({"--connect-settle-ms", "40"}).connect_settle, 40ms);
}

TEST(StreamFlags, TheGlobalBoundsWriteTheirFields) {
  const relay::ForwardOptions fo =
      parse({"--max-pending-opens", "5", "--max-streams", "9", "--open-timeout-ms", "2500"});
  EXPECT_EQ(fo.max_pending_opens, 5u);
  EXPECT_EQ(fo.max_streams, 9u);
  EXPECT_EQ(fo.open_timeout, 2500ms);
  EXPECT_THROW(parse({"--max-streams", "0"}), CLI::ValidationError);
  EXPECT_THROW(parse({"--max-pending-opens", "0"}), CLI::ValidationError);
  EXPECT_THROW(parse({"--open-timeout-ms", "50"}), CLI::ValidationError);
}

TEST(StreamFlags, OutOfRangeIsAUsageError) {
  EXPECT_THROW(parse({"--max-streams-per-sandbox", "0"}), CLI::ValidationError);
  EXPECT_THROW(parse({"--connect-settle-ms", "-2"}), CLI::ValidationError);
  EXPECT_THROW(parse({"--token-idle-s", "0"}), CLI::ValidationError);
}

}  // namespace
}  // namespace osh::cli

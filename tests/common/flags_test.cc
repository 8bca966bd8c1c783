#include "common/flags.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace intgrads {
namespace {

// A program with --name TEXT, --count N, the switch --quiet and positional
// arguments; Read returns the exit status (-1: read through) and what it
// printed on stderr.
struct Program {
  std::string name;
  int count = 0;
  bool quiet = false;
  std::vector<std::string> positional;
  bool helped = false;

  std::pair<int, std::string> Read(const std::vector<std::string>& args) {
    FlagReader reader;
    reader.program = "prog: sub";
    reader.print_help = [this] { helped = true; };
    reader.set = [this](const std::string& flag, const std::string& value) -> StatusOr<bool> {
      if (flag == "--name") {
        if (value.empty()) return InvalidError("--name must not be empty");
        name = value;
      } else if (flag == "--count") {
        count = std::stoi(value);
      } else {
        return false;
      }
      return true;
    };
    reader.take = [this](const std::vector<std::string>& all, size_t* i) -> StatusOr<bool> {
      if (all[*i] == "--quiet") {
        quiet = true;
        return true;
      }
      if (all[*i].rfind("--", 0) == 0) return false;
      positional.push_back(all[*i]);
      return true;
    };
    testing::internal::CaptureStderr();
    const std::optional<int> exit = ReadFlags(reader, args);
    return {exit.value_or(-1), testing::internal::GetCapturedStderr()};
  }
};

TEST(ReadFlags, ReadsPairsSwitchesAndPositionals) {
  Program p;
  EXPECT_EQ(p.Read({"a.png", "--name", "x", "--quiet", "--count", "7", "b.png"}), std::make_pair(-1, std::string()));
  EXPECT_EQ(p.name, "x");
  EXPECT_EQ(p.count, 7);
  EXPECT_TRUE(p.quiet);
  EXPECT_EQ(p.positional, (std::vector<std::string>{"a.png", "b.png"}));
  EXPECT_FALSE(p.helped);
}

TEST(ReadFlags, FlagEqualsValueIsTheFlagAndItsValue) {
  Program p;
  EXPECT_EQ(p.Read({"--name=x=y", "--count=7", "--quiet", "a=b.png"}), std::make_pair(-1, std::string()));
  EXPECT_EQ(p.name, "x=y");  // split at the first '='
  EXPECT_EQ(p.count, 7);
  EXPECT_TRUE(p.quiet);
  EXPECT_EQ(p.positional, (std::vector<std::string>{"a=b.png"}));  // not a flag: left whole
  Program empty;
  EXPECT_EQ(empty.Read({"--name="}), std::make_pair(2, std::string("prog: sub: --name must not be empty\n")));
}

TEST(ReadFlags, HelpEndsTheWalkWithZero) {
  Program p;
  EXPECT_EQ(p.Read({"--count", "1", "--help", "--count", "x"}).first, 0);
  EXPECT_TRUE(p.helped);
  EXPECT_EQ(p.count, 1);
}

TEST(ReadFlags, ErrorsArePrintedWithTheProgramAndEndTheWalkWithTwo) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--colour", "red"}, "prog: sub: unknown flag --colour (see --help)\n"},
      {{"--name"}, "prog: sub: unknown flag or missing value: --name (see --help)\n"},
      {{"--count", "many"}, "prog: sub: --count needs a number, got 'many'\n"},
      {{"--count", "99999999999"}, "prog: sub: --count needs a number, got '99999999999'\n"},
      {{"--name", ""}, "prog: sub: --name must not be empty\n"},
  };
  for (const auto& [args, printed] : cases) {
    Program p;
    EXPECT_EQ(p.Read(args), std::make_pair(2, printed)) << args[0];
  }
}

}  // namespace
}  // namespace intgrads

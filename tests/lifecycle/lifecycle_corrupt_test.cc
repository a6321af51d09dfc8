// Corrupt or hostile files in the data directory: an instance.json or a
// journal record that is a symlink to /dev/zero, a FIFO, not JSON, or about
// another instance is refused at once (never read, never blocking under the
// data directory's lock), makes only that instance Unknown with the reason,
// and every command on the other instances goes on working. The real snapctl
// does it all.
#include <sys/stat.h>

#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

class LifecycleCorruptTest : public LifecycleTest {
 protected:
  // Runs snapctl; its exit status, and what it printed in `output`.
  int Run(std::vector<std::string> args, std::string* output) {
    std::string log = dir_ + "/run-" + std::to_string(++runs_) + ".log";
    std::vector<std::string> argv = {SNAPCTL_BIN, "--data-dir", data_};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = ChildProcess::Spawn(argv, log);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (!p.ok()) return -1;
    int status = 0;
    bool exited = p->WaitForExit(60s, &status);
    std::ifstream in(log);
    *output = std::string((std::istreambuf_iterator<char>(in)), {});
    if (!exited) ADD_FAILURE() << "snapctl did not finish (blocked?): " << *output;
    return exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // `snapctl list --json`, by name; asserts it succeeded.
  std::map<std::string, json> List() {
    std::string out;
    EXPECT_EQ(Run({"list", "--json"}, &out), 0) << out;
    // Warnings (stderr) come first; the JSON array is the rest.
    size_t start = out.rfind("\n[\n");
    start = out.rfind("[\n", 0) == 0 ? 0 : (start == std::string::npos ? out.size() : start + 1);
    json list = json::parse(out.substr(start), nullptr, false);
    EXPECT_TRUE(list.is_array()) << out;
    std::map<std::string, json> by_name;
    if (list.is_array()) {
      for (const auto& s : list) by_name[s.value("name", "")] = s;
    }
    return by_name;
  }

  void ExpectUnknownBecause(const std::map<std::string, json>& list, const std::string& name,
                            const std::string& words) {
    auto it = list.find(name);
    ASSERT_NE(it, list.end()) << name << " is not listed";
    EXPECT_EQ(it->second.value("state", ""), "Unknown") << it->second.dump();
    EXPECT_NE(it->second.value("reason", "").find(words), std::string::npos) << it->second.dump();
  }

  // Runs a command that must fail with exit status 1 and say `words`.
  void ExpectRefused(std::vector<std::string> args, const std::string& words) {
    std::string out;
    EXPECT_EQ(Run(args, &out), 1) << args[0] << ": " << out;
    EXPECT_NE(out.find(words), std::string::npos) << args[0] << ": " << out;
  }

  std::string Instances() { return data_ + "/instances"; }
  std::string Journal() { return data_ + "/journal"; }

  int runs_ = 0;
};

TEST_F(LifecycleCorruptTest, BadMetadataMakesOnlyThatInstanceUnknown) {
  Ok({"create", "good", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("good", Steps(100));
  Ok({"standby", "good"});
  for (const char* name : {"zero", "fifo", "junk", "other"}) fs::create_directories(Instances() + "/" + name);
  ASSERT_EQ(::symlink("/dev/zero", (Instances() + "/zero/instance.json").c_str()), 0);
  ASSERT_EQ(::mkfifo((Instances() + "/fifo/instance.json").c_str(), 0600), 0);
  std::ofstream(Instances() + "/junk/instance.json") << "{\"schema_version\": 1, \"name\": ";
  // A copy of another instance's metadata: it names "good".
  fs::copy_file(Instances() + "/good/instance.json", Instances() + "/other/instance.json");

  auto list = List();
  EXPECT_EQ(list["good"].value("state", ""), "Standby") << list["good"].dump();
  ExpectUnknownBecause(list, "zero", "is a symbolic link, which is not followed");
  ExpectUnknownBecause(list, "fifo", "is not a regular file (it is a FIFO)");
  ExpectUnknownBecause(list, "junk", "is not JSON");
  ExpectUnknownBecause(list, "other", "is the metadata of instance \"good\", not of \"other\"");

  std::string out;
  ASSERT_EQ(Run({"show", "fifo"}, &out), 0) << out;
  EXPECT_NE(out.find("\"state\": \"Unknown\""), std::string::npos) << out;
  EXPECT_NE(out.find("FIFO"), std::string::npos) << out;

  // Commands on the others work.
  Ok({"restore", "good"});
  Ok({"fork", "good", "copy", "--state", "standby"});
  Ok({"recover"});
  EXPECT_EQ(Show("good").state, InstanceState::kRunning);

  // Commands on the bad ones fail with the reason, and touch nothing else:
  // deleting "other" must not take good's VMM with it.
  ExpectRefused({"restore", "zero"}, "symbolic link");
  ExpectRefused({"standby", "fifo"}, "FIFO");
  ExpectRefused({"stop", "junk"}, "not JSON");
  ExpectRefused({"delete", "other"}, "is the metadata of instance \"good\"");
  ExpectRefused({"fork", "junk", "junk-fork"}, "not JSON");
  EXPECT_TRUE(fs::exists(Instances() + "/other/instance.json"));
  EXPECT_FALSE(HasInstance("junk-fork"));
  EXPECT_EQ(Show("good").state, InstanceState::kRunning) << Show("good").reason;
  WaitForSteps("good", Steps(200));
}

TEST_F(LifecycleCorruptTest, ABadJournalRecordMakesOnlyThatInstanceUnknown) {
  Ok({"create", "good", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("good", Steps(100));
  std::ofstream(Journal() + "/ghost.json") << "{\"op\": \"fork\", ";
  ASSERT_EQ(::symlink("/dev/zero", (Journal() + "/zero.json").c_str()), 0);
  ASSERT_EQ(::mkfifo((Journal() + "/pipe.json").c_str(), 0600), 0);
  // A record about another instance: replaying it would roll back a standby
  // of "good" that never happened.
  std::ofstream(Journal() + "/alien.json") << R"({"op": "standby", "instance": "good", "data": {}})";

  auto list = List();
  EXPECT_EQ(list["good"].value("state", ""), "Running") << list["good"].dump();
  ExpectUnknownBecause(list, "ghost", "is not JSON");
  ExpectUnknownBecause(list, "zero", "is a symbolic link");
  ExpectUnknownBecause(list, "pipe", "(it is a FIFO)");
  ExpectUnknownBecause(list, "alien", "is about instance \"good\", not \"alien\"");

  std::string out;
  EXPECT_EQ(Run({"recover"}, &out), 0) << out;
  EXPECT_NE(out.find("ghost"), std::string::npos) << "recover says what it left alone: " << out;
  EXPECT_EQ(Metadata("good")["state"], "Running");
  EXPECT_EQ(Show("good").state, InstanceState::kRunning) << Show("good").reason;

  // A command on a name whose record cannot be replayed fails before it
  // starts anything; the record stays for a person to look at.
  ExpectRefused({"create", "ghost", "--vcpus", "1", "--mem-mib", "32"}, "journal record");
  EXPECT_FALSE(HasInstance("ghost"));
  EXPECT_TRUE(fs::exists(Journal() + "/ghost.json"));

  // The others work.
  Ok({"standby", "good"});
  EXPECT_EQ(Metadata("good")["state"], "Standby");
  Ok({"restore", "good"});
  EXPECT_EQ(Show("good").state, InstanceState::kRunning);
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing

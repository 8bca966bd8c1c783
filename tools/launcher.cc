#include "tools/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/flags.h"
#include "worker/serving/model_flags.h"

namespace intgrads {

namespace {

volatile sig_atomic_t g_signal = 0;
void OnSignal(int signal) { g_signal = signal; }

void PrintHelp() {
  std::printf(
      "usage: intgrads-images [-bp PATH | -lp PATH] [-h HOST] [-p PORT] [--cpu | --cuda] [options]\n"
      "       intgrads-images attribute ...   (one attribution, no server; see 'attribute --help')\n"
      "       intgrads-images prepare IMAGE CLASS OUT.json\n"
      "       intgrads-images explain IMAGE_OR_FOLDER... --out DIR   (client of a running service; see 'explain "
      "--help')\n"
      "       intgrads-images train ...       (train a CIFAR-10 LaNet; see 'train --help')\n"
      "       intgrads-images evaluate PATH   (top-1 accuracy on a CIFAR-style zip or folder tree)\n"
      "       intgrads-images path-scan ...   (the integrand along the path, each method's completeness gap)\n\n"
      "Starts the attribution service: an HTTP gateway on HOST:PORT and local workers holding the model\n"
      "(without a model flag, the embedded default model: a CIFAR-10 LaNet trained by this project).\n\n"
      "%s"
      "  -h, --host HOST          HTTP bind address (default localhost; note: -h is not help)\n"
      "  -p, --port PORT          HTTP port (default 8888)\n"
      "  --workers N              local workers (default 1 on the CPU, one per GPU with --cuda)\n"
      "  --threads N              CPU threads per worker (default: cores / workers)\n"
      "  --memory-budget-mb N     each worker's memory for a batch of path points (default 1536 on a CPU,\n"
      "                           no bound on a GPU; see intgrads-worker --help)\n"
      "  --gzip-level N           each worker's response compression (default 0; see intgrads-worker --help)\n"
      "  --batch-requests N, --batch-window-ms MS\n"
      "                           each worker's batching of queued requests (default 1, 0: none; see\n"
      "                           intgrads-worker --help)\n"
      "  --token TOKEN            require 'Authorization: Bearer TOKEN' (default: $INTGRADS_TOKEN; none if unset)\n"
      "  --help                   this text\n"
      "Other flags are passed to intgrads-gateway (limits, timeouts); see its --help.\n",
      ModelFlagsHelp());
}

std::string SelfDirectory() {
  std::error_code error;
  auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

// Starts argv; with `pass_fd` >= 0, the child gets it as its file
// descriptor kReadyFd (argv names it so).
constexpr int kReadyFd = 3;
pid_t Spawn(const std::vector<std::string>& argv, int pass_fd = -1) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (pass_fd >= 0) {
      if (pass_fd == kReadyFd) {
        fcntl(kReadyFd, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
      } else if (dup2(pass_fd, kReadyFd) < 0) {
        _exit(127);
      }
    }
    std::vector<char*> c_argv;
    c_argv.reserve(argv.size() + 1);
    for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
    c_argv.push_back(nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(c_argv[0], c_argv.data());
    std::fprintf(stderr, "intgrads-images: cannot start %s: %s\n", c_argv[0], std::strerror(errno));
    _exit(127);
  }
  return pid;
}

// "exit status 2", "killed by signal 6 (Aborted)".
std::string ExitDescription(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

}  // namespace

int RunLauncher(const std::vector<std::string>& args) {
  ModelFlags model_flags;
  std::string host = "localhost", port = "8888", budget_mb, gzip_level, batch_requests, batch_window_ms;
  int workers = 0, threads = 0;
  std::vector<std::string> gateway_extra;
  FlagReader reader = ModelFlagReader("intgrads-images", PrintHelp, &model_flags);
  reader.set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (a == "--token")
      setenv("INTGRADS_TOKEN", v.c_str(), 1);  // the gateway and workers read it; it stays off their command lines
    else if (a == "-h" || a == "--host")
      host = v;
    else if (a == "-p" || a == "--port")
      port = v;
    else if (a == "--memory-budget-mb")
      budget_mb = v;
    else if (a == "--gzip-level")
      gzip_level = v;
    else if (a == "--batch-requests")
      batch_requests = v;
    else if (a == "--batch-window-ms")
      batch_window_ms = v;
    else if (a == "--workers")
      workers = std::stoi(v);
    else if (a == "--threads")
      threads = std::stoi(v);
    else if (a.rfind('-', 0) == 0) {  // the gateway's flags, checked there
      gateway_extra.push_back(a);
      gateway_extra.push_back(v);
    } else {
      return false;
    }
    return true;
  };
  if (auto exit = ReadFlags(reader, args)) return *exit;
  // Fail at once, not at the first request.
  if (model_flags.cuda && !torch::cuda::is_available()) {
    std::fprintf(stderr, "intgrads-images: --cuda was given but CUDA is not available on this machine; use --cpu\n");
    return 2;
  }
  if (model_flags.family && access(model_flags.path.c_str(), R_OK) != 0) {
    std::fprintf(stderr, "intgrads-images: cannot read the checkpoint '%s': %s\n", model_flags.path.c_str(),
                 std::strerror(errno));
    return 2;
  }
  if (workers <= 0) workers = model_flags.cuda ? static_cast<int>(torch::cuda::device_count()) : 1;
  if (threads <= 0) {
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / (model_flags.cuda ? 1 : workers));
  }
  char run_dir_template[] = "/tmp/intgrads-XXXXXX";
  const char* run_dir = mkdtemp(run_dir_template);
  if (run_dir == nullptr) {
    std::fprintf(stderr, "intgrads-images: cannot create a run directory: %s\n", std::strerror(errno));
    return 1;
  }
  const std::string endpoint = "ipc://" + std::string(run_dir) + "/workers";
  const std::string bin = SelfDirectory();

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::vector<std::string> gateway_argv = {bin + "/intgrads-gateway", "--host", host, "--port", port,
                                           "--bind-workers",          endpoint};
  gateway_argv.insert(gateway_argv.end(), gateway_extra.begin(), gateway_extra.end());
  const pid_t gateway = Spawn(gateway_argv);
  auto worker_argv = [&](int index) {
    std::vector<std::string> argv = {bin + "/intgrads-worker", "--connect", endpoint, "--threads",
                                     std::to_string(threads)};
    if (model_flags.family) {  // else the embedded default model
      argv.insert(argv.end(), {ModelFlagName(*model_flags.family), model_flags.path});
    }
    if (model_flags.cuda) {
      argv.insert(argv.end(), {"--cuda", "--device", std::to_string(index % std::max(1, workers))});
      if (model_flags.tf32) argv.emplace_back("--tf32");
    } else {
      argv.emplace_back("--cpu");
    }
    if (model_flags.bf16) argv.emplace_back("--bf16");
    if (!budget_mb.empty()) argv.insert(argv.end(), {"--memory-budget-mb", budget_mb});
    if (!gzip_level.empty()) argv.insert(argv.end(), {"--gzip-level", gzip_level});
    if (!batch_requests.empty()) argv.insert(argv.end(), {"--batch-requests", batch_requests});
    if (!batch_window_ms.empty()) argv.insert(argv.end(), {"--batch-window-ms", batch_window_ms});
    return argv;
  };
  // Each worker says on a pipe when it is ready. One that dies before that
  // failed to start (a checkpoint it cannot serve, a device it cannot use):
  // restarting it would fail again, so the launcher stops with its error.
  std::vector<pid_t> worker_pids;
  std::vector<int> ready_pipes;
  std::vector<std::chrono::steady_clock::time_point> started;
  auto start_worker = [&](int index) -> pid_t {
    int ends[2] = {-1, -1};
    if (pipe2(ends, O_CLOEXEC) != 0) return -1;
    std::vector<std::string> argv = worker_argv(index);
    argv.insert(argv.end(), {"--ready-fd", std::to_string(kReadyFd)});
    const pid_t pid = Spawn(argv, ends[1]);
    close(ends[1]);
    fcntl(ends[0], F_SETFL, O_NONBLOCK);
    ready_pipes[static_cast<size_t>(index)] = ends[0];
    return pid;
  };
  ready_pipes.assign(static_cast<size_t>(workers), -1);
  for (int i = 0; i < workers; ++i) {
    worker_pids.push_back(start_worker(i));
    started.push_back(std::chrono::steady_clock::now());
  }
  auto was_ready = [&](size_t i) {
    char byte = 0;
    const bool ready = read(ready_pipes[i], &byte, 1) == 1;
    close(ready_pipes[i]);
    ready_pipes[i] = -1;
    return ready;
  };
  int exit_code = 0;
  while (g_signal == 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pid == gateway) {
      std::fprintf(stderr, "intgrads-images: the gateway exited (status %d); stopping\n", status);
      exit_code = 1;
      break;
    }
    for (size_t i = 0; i < worker_pids.size(); ++i) {
      if (worker_pids[i] != pid) continue;
      worker_pids[i] = -1;
      if (!was_ready(i)) {
        std::fprintf(stderr, "intgrads-images: worker %zu failed to start (%s); stopping\n", i,
                     ExitDescription(status).c_str());
        exit_code = 2;
        g_signal = SIGTERM;
        break;
      }
      std::fprintf(stderr, "intgrads-images: worker %zu died (%s); restarting it\n", i,
                   ExitDescription(status).c_str());
      if (std::chrono::steady_clock::now() - started[i] < std::chrono::seconds(5)) {
        std::this_thread::sleep_for(std::chrono::seconds(1));  // do not spin on a crash loop
      }
      worker_pids[i] = start_worker(static_cast<int>(i));
      started[i] = std::chrono::steady_clock::now();
    }
  }
  // Stop everything: workers first (they say goodbye), then the gateway.
  size_t alive = 1;
  for (pid_t pid : worker_pids) {
    if (pid <= 0) continue;
    kill(pid, SIGTERM);
    ++alive;
  }
  kill(gateway, SIGTERM);
  for (int fd : ready_pipes) {
    if (fd >= 0) close(fd);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  while (alive > 0 && std::chrono::steady_clock::now() < deadline) {
    const pid_t pid = waitpid(-1, nullptr, WNOHANG);
    if (pid > 0) {
      --alive;
    } else if (pid < 0 && errno == ECHILD) {
      break;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (alive > 0) {
    for (pid_t pid : worker_pids) {
      if (pid > 0) kill(pid, SIGKILL);
    }
    kill(gateway, SIGKILL);
    while (waitpid(-1, nullptr, 0) > 0) {
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(run_dir, ignored);
  std::fprintf(stderr, "intgrads-images: stopped\n");
  return exit_code;
}

}  // namespace intgrads

#include "tests/server/server_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <utility>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "absl/strings/str_split.h"

namespace moondream::testing {

ServerProcess::ServerProcess(const std::vector<std::string>& extra_args,
                             const std::vector<std::string>& env,
                             const std::string& ready_event) {
  std::vector<std::string> args = absl::StrSplit(MOONDREAM_TEST_EMULATOR, ' ', absl::SkipEmpty());
  for (const char* arg : {MOONDREAM_SERVER_BINARY, "--model=test", "--listen=127.0.0.1:0",
                          "--metrics-listen=127.0.0.1:0"}) {
    args.emplace_back(arg);
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed or killed test
    dup2(pipe_fds[1], STDERR_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    for (const std::string& e : env) putenv(strdup(e.c_str()));
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  reader_ = std::thread([this, fd = pipe_fds[0]] { ReadStderr(fd); });
  if (!WaitForLog(ready_event, std::chrono::seconds(60))) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& line : lines_) {
    if (line.find("event=listening") == std::string::npos) continue;
    address_ = LogField(line, "address");
    metrics_ = LogField(line, "metrics");
    http_ = LogField(line, "http");
  }
  serving_ = !address_.empty();
}

ServerProcess::~ServerProcess() {
  if (!exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  reader_.join();
}

void ServerProcess::ReadStderr(int fd) {
  FILE* in = fdopen(fd, "r");
  char* line = nullptr;
  size_t capacity = 0;
  ssize_t n;
  while ((n = getline(&line, &capacity, in)) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.emplace_back(line, line[n - 1] == '\n' ? n - 1 : n);
    cv_.notify_all();
  }
  free(line);
  fclose(in);
  std::lock_guard<std::mutex> lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

bool ServerProcess::WaitForLog(const std::string& needle, std::chrono::seconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto found = [&] {
    for (const std::string& line : lines_) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  cv_.wait_for(lock, timeout, [&] { return eof_ || found(); });
  return found();
}

std::string ServerProcess::Logs() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  for (const std::string& line : lines_) out << line << "\n";
  return out.str();
}

std::shared_ptr<grpc::Channel> ServerProcess::Channel() const {
  return grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
}

std::unique_ptr<v1::Moondream::Stub> ServerProcess::Stub() const {
  return v1::Moondream::NewStub(Channel());
}

void ServerProcess::Signal(int signal) const { kill(pid_, signal); }

std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address,
                                          std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, std::move(credentials), args);
}

int ServerProcess::WaitExit(std::chrono::seconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string LogField(const std::string& line, const std::string& key) {
  const std::string prefix = " " + key + "=";
  const size_t at = line.find(prefix);
  if (at == std::string::npos) return "";
  const size_t begin = at + prefix.size();
  return line.substr(begin, line.find(' ', begin) - begin);
}

int ConnectTo(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string HttpGet(const std::string& address, const std::string& path) {
  const int fd = ConnectTo(address);
  if (fd < 0) return "";
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

double MetricValue(const std::string& scrape, const std::string& name,
                   const std::vector<std::string>& labels) {
  std::istringstream lines(scrape);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool match = true;
    for (const std::string& label : labels) match = match && line.find(label) != std::string::npos;
    if (match) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

bool WaitForMetric(const ServerProcess& server, const std::string& name,
                   const std::vector<std::string>& labels, double value,
                   std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  do {
    if (MetricValue(HttpGet(server.metrics_address(), "/metrics"), name, labels) == value) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < end);
  return false;
}

std::string ReadFixture(const std::string& relative_path) {
  std::ifstream in(std::string(MOONDREAM_FIXTURES_DIR) + "/" + relative_path, std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + relative_path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int RunCommand(const std::string& command, const std::string& input, std::string* output) {
  char path[] = "/tmp/moondream-test-stdin-XXXXXX";
  const int fd = mkstemp(path);
  (void)!write(fd, input.data(), input.size());
  close(fd);
  FILE* pipe = popen((command + " < " + path + " 2>&1").c_str(), "r");
  output->clear();
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
  const int status = pclose(pipe);
  unlink(path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace moondream::testing

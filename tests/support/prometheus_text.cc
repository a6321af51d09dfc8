#include "support/prometheus_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <cstdlib>
#include <sstream>

#include "common/unique_fd.h"

namespace uffdpager::testing {

namespace {

bool IsName(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != ':') return false;
  }
  return true;
}

// The family a sample name belongs to (histograms add suffixes).
std::string FamilyOf(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      std::string base = name.substr(0, name.size() - s.size());
      if (types.count(base) && types.at(base) == "histogram") return base;
    }
  }
  return "";
}

}  // namespace

Result<PrometheusPage> ParsePrometheusText(const std::string& text) {
  PrometheusPage page;
  std::map<std::string, bool> has_help;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("line " + std::to_string(number) + " \"" + line + "\": " + why);
  };
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0) {
      std::string rest = line.substr(7);
      has_help[rest.substr(0, rest.find(' '))] = true;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      if (!IsName(name) || (type != "counter" && type != "gauge" && type != "histogram")) return bad("bad TYPE");
      if (!has_help[name]) return bad("TYPE without HELP");
      if (page.types.count(name)) return bad("family announced twice");
      page.types[name] = type;
      continue;
    }
    if (line[0] == '#') return bad("unknown comment");
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    std::string name = line.substr(0, i);
    if (!IsName(name)) return bad("bad metric name");
    if (FamilyOf(name, page.types).empty()) return bad("sample of an unannounced family");
    std::string series = name;
    if (i < line.size() && line[i] == '{') {
      series += '{';
      ++i;
      bool first = true;
      while (i < line.size() && line[i] != '}') {
        if (!first) {
          if (line[i] != ',') return bad("expected ','");
          ++i;
        }
        size_t eq = line.find('=', i);
        if (eq == std::string::npos || !IsName(line.substr(i, eq - i))) return bad("bad label name");
        std::string label = line.substr(i, eq - i);
        i = eq + 1;
        if (i >= line.size() || line[i] != '"') return bad("label value not quoted");
        ++i;
        std::string value;
        for (;; ++i) {
          if (i >= line.size()) return bad("unterminated label value");
          if (line[i] == '"') break;
          if (line[i] == '\\') {
            ++i;
            if (i >= line.size()) return bad("dangling escape");
            if (line[i] == 'n')
              value += '\n';
            else if (line[i] == '\\' || line[i] == '"')
              value += line[i];
            else
              return bad("bad escape");
          } else {
            value += line[i];
          }
        }
        ++i;  // closing quote
        series += (first ? "" : ",") + label + "=\"" + value + "\"";
        first = false;
      }
      if (i >= line.size()) return bad("unterminated labels");
      ++i;
      series += '}';
    }
    if (i >= line.size() || line[i] != ' ') return bad("expected a space before the value");
    std::string value_text = line.substr(i + 1);
    char* end = nullptr;
    double value = std::strtod(value_text.c_str(), &end);
    if (value_text.empty() || *end != '\0') return bad("value is not a number");
    if (page.samples.count(series)) return bad("duplicate series");
    page.samples[series] = value;
  }
  return page;
}

Result<std::pair<int, std::string>> HttpGetOverTcp(const std::string& address, const std::string& path,
                                                   const std::string& method) {
  size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  int port = std::atoi(address.c_str() + colon + 1);
  bool v6 = host.size() > 1 && host.front() == '[';
  if (v6) host = host.substr(1, host.size() - 2);
  UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage storage{};
  socklen_t length;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET6, host.c_str(), &a->sin6_addr);
    length = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, host.c_str(), &a->sin_addr);
    length = sizeof(*a);
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    return Status::FromErrno(errno, "connect " + address);
  }
  std::string request = method + " " + path + " HTTP/1.0\r\nHost: metrics\r\nContent-Length: 0\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    return Status::FromErrno(errno, "send to " + address);
  }
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd.get(), buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
  size_t body_at = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body_at == std::string::npos) {
    return Status::Protocol("not an HTTP response from " + address + ": " + response.substr(0, 200));
  }
  return std::make_pair(std::atoi(response.c_str() + 9), response.substr(body_at + 4));
}

}  // namespace uffdpager::testing

// `sizeguard serve`: the admission server wired to the mutate/validate handlers.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include "webhook/app/background_audit.h"
#include "webhook/app/commands.h"
#include "webhook/app/handlers.h"
#include "webhook/app/runtime.h"
#include "webhook/devcerts.h"
#include "webhook/logging.h"
#include "kube/periodic.h"
#include "webhook/server.h"

namespace sizeguard {
namespace {

struct ServeFlags {
  ServerOptions server;
  RuntimeOptions runtime;
  bool dev = false;
  std::string dev_cert_dir;
  std::string read_timeout = "10s", write_timeout = "10s", idle_timeout = "120s", drain_timeout = "30s";
  std::string log_format = "text", log_level = "info";
  std::string tls_reload_interval = "30s";
  std::string audit_interval = "10m";  // background audit of existing objects; 0 = off
};

// Each open connection is a descriptor: raise the soft limit (often 1024) towards the hard
// limit so --max-connections, not EMFILE, is what bounds them.
void raise_open_file_limit(std::size_t max_connections, spdlog::logger& logger) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t wanted = static_cast<rlim_t>(2 * max_connections + 256);  // both listeners, plus files
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted) {
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted) {
    logger.warn("open file limit {} is below what --max-connections {} needs ({}); accepts may fail first",
                static_cast<unsigned long long>(limit.rlim_cur), max_connections,
                static_cast<unsigned long long>(wanted));
  }
}

// "0", "0s", "0m": turned off (parse_duration accepts only positive durations).
bool zero_duration(const std::string& text) {
  const auto rest = text.find_first_not_of('0');
  if (text.empty() || rest == 0) return false;
  const std::string unit = rest == std::string::npos ? "" : text.substr(rest);
  return unit.empty() || unit == "s" || unit == "ms" || unit == "m" || unit == "h";
}

// Blocks the shutdown signals in this thread and every thread started after, so that
// sigwait() below is the one place they arrive.
sigset_t block_shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);  // reload the serving certificate
  sigset_t with_pipe = signals;
  sigaddset(&with_pipe, SIGPIPE);  // a peer closing mid-write must not kill the process
  pthread_sigmask(SIG_BLOCK, &with_pipe, nullptr);
  return signals;
}

int run_serve(ServeFlags flags) {
  Metrics metrics;  // before the logger, whose writer thread counts drops in it
  std::shared_ptr<spdlog::logger> logger;
  // The logger would outlive this function in spdlog's registry, its writer thread still
  // holding `metrics`: on the way out it is flushed and replaced by a plain stderr logger.
  struct DetachLogger {
    std::shared_ptr<spdlog::logger>& logger;
    ~DetachLogger() {
      if (!logger) return;
      logger->flush();
      if (spdlog::default_logger() == logger) spdlog::set_default_logger(make_logger("sizeguard", LogFormat::Text));
    }
  } detach_logger{logger};
  std::chrono::milliseconds tls_reload_interval{};
  std::chrono::milliseconds audit_interval{};
  try {
    // Info lines (one per decision) are buffered off the request path, one write per batch;
    // a warning or error flushes at once, so it is never late or lost to a crash.
    describe_log_drop_metric(metrics);
    LineWriterOptions log_buffering;
    log_buffering.thread_name = "sg-log";
    log_buffering.on_drop = [&metrics](std::size_t lines) {
      metrics.increment(kLogLinesDropped, {{"log", "process"}}, static_cast<double>(lines));
    };
    logger = make_logger("sizeguard", parse_log_format(flags.log_format),
                         make_buffered_sink(STDERR_FILENO, std::move(log_buffering)));
    logger->flush_on(spdlog::level::warn);
    logger->set_level(parse_log_level(flags.log_level));
    flags.server.read_timeout = parse_duration("--read-timeout", flags.read_timeout);
    flags.server.write_timeout = parse_duration("--write-timeout", flags.write_timeout);
    flags.server.idle_timeout = parse_duration("--idle-timeout", flags.idle_timeout);
    flags.server.drain_timeout = parse_duration("--drain-timeout", flags.drain_timeout);
    tls_reload_interval = parse_duration("--tls-reload-interval", flags.tls_reload_interval);
    if (!zero_duration(flags.audit_interval)) audit_interval = parse_duration("--audit-interval", flags.audit_interval);
    parse_listen_address(flags.server.listen);
    parse_listen_address(flags.server.metrics_listen);
    if (flags.server.workers == 0) throw std::invalid_argument("--workers must be at least 1");
    if (flags.server.max_connections == 0) throw std::invalid_argument("--max-connections must be at least 1");
    if (flags.server.max_body_bytes == 0) throw std::invalid_argument("--max-body-bytes must be at least 1");
    // One malloc arena per thread. glibc otherwise caps arenas at 8 per core, so threads
    // share them, and the large-review lane's garbage (hundreds of thousands of chunks
    // freed after a 10,000-container Pod) lands in an arena whose next worker malloc then
    // spends milliseconds sorting it. Idle threads create no arena, so this costs a few
    // MiB of RSS under load.
    ::mallopt(M_ARENA_MAX, static_cast<int>(std::min<std::size_t>(flags.server.workers + 64, 4096)));
  } catch (const std::exception& e) {
    std::cerr << "sizeguard serve: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_default_logger(logger);
  raise_open_file_limit(flags.server.max_connections, *logger);

  // Dev certificates when asked for and no cert given; a temp dir we made is removed at exit.
  std::optional<std::filesystem::path> temp_cert_dir;
  struct RemoveDir {
    std::optional<std::filesystem::path>& dir;
    ~RemoveDir() {
      std::error_code ec;
      if (dir) std::filesystem::remove_all(*dir, ec);
    }
  } remove_temp_cert_dir{temp_cert_dir};
  if (flags.server.tls_cert.empty() != flags.server.tls_key.empty()) {
    std::cerr << "sizeguard serve: --tls-cert and --tls-key must be given together\n";
    return 2;
  }
  const bool dev_certificates = flags.server.tls_cert.empty();
  if (flags.server.tls_cert.empty()) {
    if (!flags.dev) {
      std::cerr << "sizeguard serve: --tls-cert and --tls-key are required (or --dev for throwaway dev certificates)\n";
      return 2;
    }
    try {
      std::filesystem::path dir = flags.dev_cert_dir;
      if (dir.empty()) dir = *(temp_cert_dir = make_private_temp_directory("sizeguard-dev-certs"));
      DevCertificates certs = make_dev_certificates(std::filesystem::absolute(dir));
      flags.server.tls_cert = certs.server_cert.string();
      flags.server.tls_key = certs.server_key.string();
      std::cout << "sizeguard: dev CA certificate (trust this for TLS): " << certs.ca_cert.string() << std::endl;
      log_event(*logger, spdlog::level::info, "dev certificates written",
                {{"ca", certs.ca_cert.string()}, {"cert", flags.server.tls_cert}, {"key", flags.server.tls_key}});
    } catch (const std::exception& e) {
      std::cerr << "sizeguard serve: " << e.what() << "\n";
      return 2;
    }
  }

  // A dev machine has no mounted ConfigMap: without --policies, run with none.
  if (flags.dev && flags.runtime.policies == RuntimeOptions{}.policies &&
      !std::filesystem::exists(flags.runtime.policies)) {
    log_event(*logger, spdlog::level::warn, "no policies: --policies not given and the default is missing",
              {{"path", flags.runtime.policies}});
    flags.runtime.policies.clear();
  }

  sigset_t shutdown_signals = block_shutdown_signals();
  Readiness readiness;
  std::unique_ptr<Runtime> runtime;
  std::unique_ptr<AdmissionServer> server;
  try {
    runtime = make_runtime(flags.runtime, metrics, &readiness);
    AdmissionContext& context = runtime->context;
    AdmissionHandlers handlers{
        [&context](const AdmissionRequest& request) { return mutate(request, context); },
        [&context](const AdmissionRequest& request) { return validate(request, context); }};
    server = std::make_unique<AdmissionServer>(flags.server, std::move(handlers), metrics, readiness, logger);
    // Current vs recommended per workload, as right-sizing has seen them, and which
    // recommendations are in force (the snapshot's model and gate decision).
    server->add_get_route("/recommendations", [report = runtime->report.get(),
                                               store = runtime->recommendations.get()](const auto&) {
      Json table = report->table();
      if (auto snapshot = store ? store->current() : nullptr) table["recommender"] = snapshot_summary_json(*snapshot);
      return HttpAnswer{200, "application/json", table.dump(2) + "\n"};
    });
  } catch (const std::exception& e) {
    std::cerr << "sizeguard serve: " << e.what() << "\n";
    return 2;
  }
  try {
    server->start();
  } catch (const std::exception& e) {
    std::cerr << "sizeguard serve: " << e.what() << "\n";
    return 1;
  }

  // cert-manager and `make-certs.sh --rotate-ca` replace the Secret's files in place:
  // poll their modification times (cheap) and reload; SIGHUP reloads at once.
  auto reload_certificate = [&](const char* why) {
    try {
      server->reload_tls();
      log_event(*logger, spdlog::level::info, "serving certificate reloaded", {{"trigger", why}});
    } catch (const std::exception& e) {
      log_event(*logger, spdlog::level::err, "serving certificate reload failed, keeping the previous one",
                {{"error", e.what()}});
    }
  };
  auto cert_stamp = [&flags] {
    std::error_code ec;
    std::string stamp;
    for (const auto& path : {flags.server.tls_cert, flags.server.tls_key}) {
      auto time = std::filesystem::last_write_time(path, ec);
      stamp += std::to_string(ec ? 0 : time.time_since_epoch().count()) + "/" +
               std::to_string(ec ? 0 : std::filesystem::file_size(path, ec)) + ";";
    }
    return stamp;
  };
  // From 30 days before notAfter, a warning at startup and then every hour, so a stuck
  // renewal shows up in the logs long before the apiserver starts failing calls. --dev
  // certificates are made fresh for 30 days at every start: only their last day counts.
  const auto warn_before = std::chrono::hours(24 * (dev_certificates ? 1 : 30));
  auto warn_if_expiring = [&, last_warning = std::chrono::steady_clock::time_point()]() mutable {
    const auto left = server->tls().not_after() - std::chrono::system_clock::now();
    if (left > warn_before) return;
    const auto now = std::chrono::steady_clock::now();
    if (last_warning != std::chrono::steady_clock::time_point() && now - last_warning < std::chrono::hours(1)) return;
    last_warning = now;
    const auto days = std::chrono::duration_cast<std::chrono::hours>(left).count() / 24.0;
    log_event(*logger, spdlog::level::warn, "serving certificate expires soon",
              {{"days_left", std::to_string(static_cast<int>(days)), true}, {"cert", flags.server.tls_cert}});
  };
  warn_if_expiring();
  PeriodicTask cert_watcher;
  cert_watcher.start(tls_reload_interval, [&, last = cert_stamp()]() mutable {
    std::string now = cert_stamp();
    if (now != last) {
      last = now;
      reload_certificate("file change");
    }
    warn_if_expiring();
  });

  // The background audit of existing objects: one replica (the Lease holder) at a time.
  std::unique_ptr<BackgroundAudit> background_audit;
  if (audit_interval.count() > 0 && runtime->kube) {
    BackgroundAuditOptions audit;
    audit.interval = audit_interval;
    audit.renew_every = std::min(audit.renew_every, audit_interval);
    audit.lease.namespace_ = runtime->lease_namespace;
    audit.policies = runtime->context.policies;
    audit.rightsizing = runtime->context.rightsizing;
    audit.state = runtime->cluster_state.get();
    audit.evaluation = runtime->context.evaluation;
    audit.metrics = &metrics;
    audit.ready = [&readiness] { return readiness.report().ready; };
    background_audit = std::make_unique<BackgroundAudit>(*runtime->kube, std::move(audit));
    background_audit->start();
  } else if (audit_interval.count() > 0) {
    log_event(*logger, spdlog::level::info, "background audit off: no cluster access", {});
  }

  int signal_number = 0;
  while (sigwait(&shutdown_signals, &signal_number) == 0 && signal_number == SIGHUP) {
    reload_certificate("SIGHUP");
  }
  cert_watcher.stop();
  if (background_audit) background_audit->stop();  // gives the leader Lease up at once
  log_event(*logger, spdlog::level::info, "shutting down",
            {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"},
             {"drain_timeout", flags.drain_timeout}});
  if (!server->shutdown()) {
    // Busy connections past the drain timeout: exit now rather than wait on them.
    logger->flush();
    runtime->audit->flush();
    std::fflush(stdout);
    std::_Exit(0);
  }
  server.reset();
  runtime.reset();  // the audit log's last lines
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand("serve", "Serve the admission webhook over HTTPS (POST /mutate, POST /validate)");
  cmd->add_option("--listen", flags->server.listen, "HTTPS address for the webhook: HOST:PORT, :PORT or [IPV6]:PORT")
      ->capture_default_str();
  cmd->add_option("--metrics-listen", flags->server.metrics_listen,
                  "plain-HTTP address for /healthz, /readyz and /metrics")
      ->capture_default_str();
  cmd->add_option("--tls-cert", flags->server.tls_cert, "PEM certificate chain file for the webhook listener");
  cmd->add_option("--tls-key", flags->server.tls_key, "PEM private key file for the webhook listener");
  cmd->add_flag("--dev", flags->dev,
                "without --tls-cert/--tls-key: make a throwaway CA and a cert for localhost/127.0.0.1/::1");
  cmd->add_option("--dev-cert-dir", flags->dev_cert_dir,
                  "where --dev writes ca.crt, tls.crt, tls.key (default: a temp dir removed at exit)");
  cmd->add_option("--max-body-bytes", flags->server.max_body_bytes, "largest accepted request body; larger gets 413")
      ->capture_default_str();
  cmd->add_option("--large-review-bytes", flags->server.large_review_bytes,
                  "reviews with a larger body are decided one at a time at lower CPU priority, so they cannot slow the "
                  "others; 0 = all inline")
      ->capture_default_str();
  cmd->add_option("--read-timeout", flags->read_timeout,
                  "limit for the TLS handshake and for reading each whole request")
      ->capture_default_str();
  cmd->add_option("--write-timeout", flags->write_timeout, "limit for writing each response")->capture_default_str();
  cmd->add_option("--idle-timeout", flags->idle_timeout, "close keep-alive connections idle this long")
      ->capture_default_str();
  cmd->add_option("--drain-timeout", flags->drain_timeout,
                  "on SIGTERM/SIGINT, how long to wait for accepted requests before exiting")
      ->capture_default_str();
  cmd->add_option("--workers", flags->server.workers,
                  "worker threads for the webhook listener (each answers one complete request at a time)")
      ->capture_default_str();
  cmd->add_option("--max-connections", flags->server.max_connections,
                  "open connections per listener; more are closed at accept")
      ->capture_default_str();
  cmd->add_option("--tls-reload-interval", flags->tls_reload_interval,
                  "how often the cert/key files are checked for changes (SIGHUP reloads at once)")
      ->capture_default_str();
  cmd->add_option("--audit-interval", flags->audit_interval,
                  "how often the leader replica audits existing workloads into PolicyReports (also when policies or "
                  "recommendations reload); 0 = off")
      ->capture_default_str();
  cmd->add_option("--log-format", flags->log_format, "text or json")->capture_default_str();
  cmd->add_option("--log-level", flags->log_level, "trace, debug, info, warn, error")->capture_default_str();
  flags->runtime.audit_log = "-";
  flags->runtime.buffered_audit = true;
  flags->runtime.auto_in_cluster = true;
  flags->runtime.watch_cluster_state = true;
  add_runtime_options(*cmd, flags->runtime);
  cmd->callback([flags, &exit_code] { exit_code = run_serve(*flags); });
}

}  // namespace sizeguard

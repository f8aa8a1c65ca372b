// A fake kube-apiserver for tests: HTTPS on 127.0.0.1 (ephemeral port) with a throwaway
// CA, bearer-token auth, an in-memory object store and failure injection.
//
// Store keys are (api prefix, namespace, resource, name): put("api/v1", "namespaces", "", ns)
// stores a Namespace, put("apis/apps/v1", "deployments", "prod", deploy) a Deployment.
// It speaks: GET of one object (/api/v1/namespaces/{name}, /api/v1/namespaces/{ns}/{res}/{name},
// /apis/{g}/{v}/namespaces/{ns}/{res}/{name}, and cluster-scoped /api/v1/{res}/{name});
// LIST of a collection with labelSelector (a=b, a==b, a!=b, key, !key, key in (x,y),
// key notin (x,y)) and fieldSelector (field=x, field!=x; comma = AND; a pod without
// status.phase is Pending), in pages with limit/continue; POST create (409 AlreadyExists), PUT replace (404 when absent,
// 409 Conflict when metadata.resourceVersion is given and differs from the stored one),
// DELETE. Every write bumps a global resourceVersion. Errors are metav1.Status bodies.
//
// WATCH: GET of a collection with ?watch=1 streams newline-delimited events (ADDED,
// MODIFIED, DELETED, BOOKMARK with allowWatchBookmarks=true, ERROR) after resourceVersion
// (none or "0": the current objects as ADDED first); label/field selectors apply to the old
// and the new object, so an object leaving the selector arrives as DELETED. timeoutSeconds
// ends the stream. Tests force the failure modes: compact() makes older resourceVersions
// expire (410 Gone as an ERROR event, or as an HTTP 410 answer), drop_watches() closes
// every open stream without a final chunk, end_watches() ends them cleanly.
//
// Idle keep-alive connections are closed after `idle_timeout_seconds` (kube-apiserver:
// 90 s), as the server's TLS close_notify and FIN.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kube/kubeapi.h"
#include "kube/review.h"

namespace httplib {
class SSLServer;
struct Request;
struct Response;
}  // namespace httplib

namespace sizeguard::test {

class FakeApiServer {
 public:
  explicit FakeApiServer(std::string token = "fake-apiserver-token", int idle_timeout_seconds = 5);
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  std::string url() const;  // "https://127.0.0.1:<port>"
  int port() const { return port_; }
  const std::string& ca_pem() const { return ca_pem_; }
  std::filesystem::path ca_file() const;  // the same CA as a file
  std::string token() const;
  // A client configuration that trusts this server's CA and carries its token.
  KubeConfig client_config(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
  // The same as a kubeconfig file (context "fake", CA by file path), for a child `sizeguard`.
  void write_kubeconfig(const std::filesystem::path& path) const;
  void set_token(std::string token);  // e.g. to simulate rotation

  // Stores `object` (its metadata.name names it; metadata.namespace is set to `ns`) with
  // a new resourceVersion, replacing any existing one. Returns the stored object.
  Json put(const std::string& api_prefix, const std::string& resource, const std::string& ns, Json object);
  std::optional<Json> get(const std::string& api_prefix, const std::string& resource, const std::string& ns,
                          const std::string& name) const;
  bool remove(const std::string& api_prefix, const std::string& resource, const std::string& ns,
              const std::string& name);

  // Failure injection.
  void set_delay(std::chrono::milliseconds delay);  // before answering every request
  // The next `count` requests are answered with a metav1.Status of that code (after auth).
  void fail_next(int status, int count = 1, std::string message = "");
  // Close the connection without any answer (the socket is shut down in the handler).
  void set_drop_connections(bool drop);

  // Watch control (see the top of this file).
  void compact();                          // resourceVersions before now answer 410 Gone
  void set_gone_as_http_status(bool http); // 410 as an HTTP answer instead of an ERROR event
  void drop_watches();                     // close every open watch stream abruptly
  void end_watches();                      // end every open watch stream cleanly
  void send_bookmarks();                   // a BOOKMARK on every stream that allows them
  // Streams write a bare newline after 1 s of silence (to notice clients that went away);
  // off, a quiet stream sends nothing, like a connection that died without a FIN.
  void set_watch_heartbeats(bool on);
  int open_watches() const;                // watch streams being served now
  int watches_started() const;             // watch requests answered with a stream so far

  // Server-side sockets connected now, and distinct client connections seen so far.
  int open_connections() const;
  std::size_t connections_seen() const;

  std::size_t request_count() const;
  std::vector<std::string> requests() const;  // "GET /api/v1/namespaces/prod" (raw target)
  void clear_requests();

  void stop();

 private:
  using Key = std::tuple<std::string, std::string, std::string, std::string>;  // prefix, ns, resource, name
  struct Event {
    std::uint64_t resource_version;
    std::string type;  // ADDED, MODIFIED, DELETED
    Key key;
    Json object;
    std::optional<Json> old;  // before a MODIFIED or DELETED
  };
  void handle(const httplib::Request& request, httplib::Response& response);
  void route(const httplib::Request& request, httplib::Response& response);
  void watch(const httplib::Request& request, httplib::Response& response, const std::string& prefix,
             const std::string& ns, const std::string& resource);
  // Stores or removes under mutex_, recording the watch event.
  Json store_locked(const Key& key, Json object);
  std::optional<Json> erase_locked(const Key& key);

  std::filesystem::path directory_;
  std::string ca_pem_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mutex_;
  std::string token_;
  std::map<Key, Json> objects_;
  std::uint64_t resource_version_ = 1000;
  std::chrono::milliseconds delay_{0};
  int fail_status_ = 0;
  int fail_count_ = 0;
  std::string fail_message_;
  bool drop_ = false;
  std::vector<std::string> requests_;
  std::set<int> client_ports_;

  std::vector<Event> events_;
  std::uint64_t compacted_ = 0;  // watches from an older resourceVersion get 410
  bool gone_as_http_ = false;
  bool heartbeats_ = true;
  int drop_generation_ = 0, end_generation_ = 0, bookmark_generation_ = 0;
  int open_watches_ = 0, watches_started_ = 0;
  std::condition_variable watch_wake_;
};

// A metav1.Status failure body, as the apiserver sends it.
Json kube_status(int code, const std::string& reason, const std::string& message);

}  // namespace sizeguard::test

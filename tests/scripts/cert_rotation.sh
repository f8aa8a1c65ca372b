#!/usr/bin/env bash
# Certificate rotation on the real binary: certs/make-certs.sh re-issues the serving cert
# (same CA) while clients send reviews over keep-alive and over new connections. No request
# may fail; new connections must get the new certificate; a cert close to expiry is warned about.
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
# shellcheck source=tests/scripts/lib/serve.bash
source "$src/tests/scripts/lib/serve.bash"

"$src/certs/make-certs.sh" --out "$work/certs" --ip 127.0.0.1 --dns localhost --days 10 >/dev/null
"$bin" serve --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --policies '' --tls-reload-interval 200ms > "$work/server.log" 2>&1 &
pid=$!
wait_for_ports "$work/server.log" "$pid"
grep -q 'serving certificate expires soon' "$work/server.log" || fail "no expiry warning for a 10-day certificate"

serial() {  # the serial of the certificate a new connection gets
  openssl s_client -connect "127.0.0.1:$port" -CAfile "$work/certs/ca.crt" </dev/null 2>/dev/null |
    openssl x509 -noout -serial
}
before=$(serial)
[[ -n $before ]] || fail "no certificate served"

# Clients: one keep-alive connection and one new connection per request, for 4 seconds.
python3 - "$port" "$work/certs/ca.crt" "$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" > "$work/clients.out" <<'PY' &
import http.client, json, ssl, sys, threading, time
port, ca, fixture = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read()
ctx = ssl.create_default_context(cafile=ca)
counts = {"ok": 0, "failed": 0}
lock = threading.Lock()
def review(conn):
    conn.request("POST", "/validate?timeout=10s", body=fixture, headers={"Content-Type": "application/json"})
    r = conn.getresponse(); body = r.read()
    return r.status == 200 and json.loads(body)["response"]["uid"]
def keepalive():
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    end = time.time() + 4
    while time.time() < end:
        try:
            ok = review(conn)
        except Exception as e:
            ok = False; conn.close(); conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        with lock: counts["ok" if ok else "failed"] += 1
def fresh():
    end = time.time() + 4
    while time.time() < end:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try: ok = review(conn)
        except Exception: ok = False
        finally: conn.close()
        with lock: counts["ok" if ok else "failed"] += 1
threads = [threading.Thread(target=keepalive), threading.Thread(target=fresh)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(counts))
PY
clients=$!
sleep 1
"$src/certs/make-certs.sh" --out "$work/certs" --ip 127.0.0.1 --dns localhost --days 365 >/dev/null
wait "$clients" || fail "client script"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["failed"] == 0 and c["ok"] > 20, c' "$work/clients.out" \
  || fail "requests failed during rotation: $(cat "$work/clients.out")"
grep -q 'serving certificate reloaded' "$work/server.log" || fail "no reload logged"
after=$(serial)
[[ $after != "$before" ]] || fail "new connections still get the old certificate ($before)"
kill "$pid" && wait "$pid" 2>/dev/null || true

# --dev makes fresh 30-day certificates at every start: no expiry warning for those.
"$bin" serve --dev --dev-cert-dir "$work/dev" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --policies '' > "$work/server.log" 2>&1 &
pid=$!
wait_for_ports "$work/server.log" "$pid"
! grep -q 'expires soon' "$work/server.log" || fail "serve --dev warns about its own fresh certificate"
echo "cert_rotation: ok ($(cat "$work/clients.out"))"

#!/usr/bin/env bash
# The real-broker lane: the project's tests against RobustMQ 8bd49dc, the prebuilt in
# ../shared/robustmq, as .ci/run runs it after the suite (and anyone by hand, the same way):
#
#   testbed/robustmq.sh lane [TESTS]     # TESTS: what the single-node part runs (tests/ unless given)
#
# Three parts, each on fresh RobustMQ nodes: every test of `-k robustmq` on one node with agent
# search by meaning (the MiniLM model directory bench/discovery.py writes); the cluster lane on three
# nodes (tests/robustmq/test_cluster_lane.py, nodes killed and started again); the logins tests on
# one node with `auth_required` and two users made through its admin API. One process a part (one
# RobustMQ serves every test), a per-test timeout (a hang fails with the test's name), and a part
# fails when RobustMQ's log holds a `panicked`. The last line is the lane's count:
# "lane: N passed, N failed, N skipped".
#
# RobustMQ's listeners take fixed ports, so the parts run inside a network namespace of their own
# (and a PID namespace: whatever they start ends with them). What needs the network (the official
# JavaScript SDK's npm install) and the model directory are made before entering it.
#
# MQ9_LANE_TIMEOUT: seconds a test may take (300); MQ9_FAILOVER_RUNS: the cluster lane's kills (2
# here; the issue's measurement ran 10); MQ9_LANE_PARTS: which parts ("single cluster logins").
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
python=${MQ9_LANE_PYTHON:-$root/.venv/bin/python}
prebuilt=${MQ9_ROBUSTMQ_PREBUILT:-$root/../shared/robustmq}
rmq="$here/robustmq.sh"

nats_port() { echo $((4222 + ($1 - 1) * 1000)); }

if [ "${1:-}" = kill ] || [ "${1:-}" = restart ]; then
  # the cluster lane's MQ9_ROBUSTMQ_KILL / _START, {port} the NATS port of a node
  n=$((($2 - 4222) / 1000 + 1))
  dir=$MQ9_LANE_DIR/cluster/node-$n
  if [ "$1" = kill ]; then
    kill -9 "$(cat "$dir.pid")"
  else
    setsid "$rmq" node "$n" --nodes 3 --home "$dir" --model "$MQ9_LANE_DIR/model" >> "$dir.log" 2>&1 < /dev/null &
    echo $! > "$dir.pid"
  fi
  exit 0
fi

if [ ! -x "$prebuilt/start.sh" ]; then
  echo "robustmq lane: not run, no prebuilt RobustMQ at $prebuilt (build one: testbed/robustmq.sh build SRC vector-search, CONTRIBUTING.md)"
  exit 0
fi

if [ -z "${MQ9_LANE_INSIDE:-}" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/mq9-lane.XXXXXX")
  echo "robustmq lane: RobustMQ 8bd49dc from $prebuilt; logs in $work"
  # the model directory RobustMQ embeds agent cards with (vector search)
  "$python" -c "from pathlib import Path; from bench.discovery import minilm_directory; minilm_directory(Path('$work/model'))" \
    || { echo "robustmq lane: the MiniLM model directory could not be written (the dev extra's semantic-model-dir)"; exit 1; }
  # the official SDKs: the snapshot beside the binary; the JavaScript one built while npm is reachable
  export MQ9_SDK_REPO=${MQ9_SDK_REPO:-$prebuilt/mq9-sdk}
  (cd "$root" && "$python" -m testbed.support.js_sdk) || echo "robustmq lane: the JavaScript SDK is not built: its tests will skip, saying why"
  "$rmq" unpack >/dev/null || exit 1  # (xz: seconds a start would otherwise spend)
  if [ "$(id -u)" = 0 ]; then ns=(unshare --net --pid --fork --mount-proc); else
    ns=(unshare --map-root-user --net --pid --fork --mount-proc); fi
  MQ9_LANE_INSIDE=1 MQ9_LANE_DIR=$work exec "${ns[@]}" "$0" "$@"
fi

# --- inside the namespaces -------------------------------------------------------------------------
work=$MQ9_LANE_DIR
ip link set lo up
cd "$root"
timeout_s=${MQ9_LANE_TIMEOUT:-300}
parts=${MQ9_LANE_PARTS:-single cluster logins}
started=$(date +%s)
status=0

ready() {  # ready PORT: RobustMQ answers a NATS INFO line within 90 s
  local port=$1 deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ]; do
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 4 <&3" 2>/dev/null | grep -q INFO; then
      return 0
    fi
    sleep 0.5
  done
  echo "robustmq lane: RobustMQ on port $port not ready in 90 s"
  return 1
}

start_node() {  # start_node DIR N NODES [OPTIONS]: node N in the background, its pid in DIR.pid
  local dir=$1 n=$2 nodes=$3
  shift 3
  setsid "$rmq" node "$n" --nodes "$nodes" --home "$dir" "$@" >> "$dir.log" 2>&1 < /dev/null &
  echo $! > "$dir.pid"
  disown $!  # (killed at the part's end: no "Killed" line from the shell)
  ready "$(nats_port "$n")"
}

stop_nodes() {  # stop every node of a part, then read their logs for a panic
  local part=$1 pidfile
  for pidfile in "$work/$part"/*.pid; do
    [ -e "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null
  done
  sleep 1
  if grep -rl "panicked" "$work/$part" >/dev/null 2>&1; then
    echo "robustmq lane: RobustMQ panicked in the $part part:"
    grep -rh -m 5 "panicked" "$work/$part" | cut -c1-300
    status=1
  fi
}

run_tests() {  # run_tests PART PYTEST-ARGS...
  local part=$1
  shift
  echo "+ pytest $* ($part)"
  "$python" -m pytest -q -n 0 -p no:randomly -p pytest_timeout --timeout "$timeout_s" -rfEs \
    --junitxml "$work/$part.xml" "$@"
  local code=$?
  if [ $code -ne 0 ] && [ $code -ne 5 ]; then status=1; fi
}

for part in $parts; do
  mkdir -p "$work/$part"
  part_started=$(date +%s)
  case "$part" in
  single)
    if start_node "$work/single/node-1" 1 1 --model "$work/model"; then
      MQ9_ROBUSTMQ_URL=nats://127.0.0.1:4222 run_tests single -k robustmq "${@:-tests}"
    else status=1; fi
    ;;
  cluster)
    ok=1
    for n in 1 2 3; do  # a few seconds apart (docs/deploy-robustmq.md: nodes started at once may not join)
      start_node "$work/cluster/node-$n" "$n" 3 --model "$work/model" || { ok=0; break; }
    done
    if [ $ok = 1 ]; then
      MQ9_ROBUSTMQ_CLUSTER_URLS=nats://127.0.0.1:4222,nats://127.0.0.1:5222,nats://127.0.0.1:6222 \
      MQ9_ROBUSTMQ_ADMIN=http://127.0.0.1:58080,http://127.0.0.1:58081,http://127.0.0.1:58082 \
      MQ9_ROBUSTMQ_KILL="$0 kill {port}" MQ9_ROBUSTMQ_START="$0 restart {port}" \
      MQ9_FAILOVER_RUNS=${MQ9_FAILOVER_RUNS:-2} MQ9_LANE_DIR=$work \
        run_tests cluster tests/robustmq/test_cluster_lane.py
    else status=1; fi
    ;;
  logins)
    if start_node "$work/logins/node-1" 1 1 --logins; then
      for user in alice bob; do  # the admin API trusts loopback (admin-server auth.rs)
        curl -fsS -X POST -H 'content-type: application/json' http://127.0.0.1:58080/api/cluster/user/create \
          -d "{\"tenant\":\"default\",\"username\":\"$user\",\"password\":\"$user-secret\",\"is_superuser\":false}" >/dev/null \
          || { echo "robustmq lane: the admin API did not make user $user"; status=1; }
      done
      MQ9_ROBUSTMQ_URL=nats://127.0.0.1:4222 MQ9_ROBUSTMQ_LOGINS=alice:alice-secret,bob:bob-secret \
        run_tests logins tests/robustmq/test_robustmq_logins.py -k robustmq
    else status=1; fi
    ;;
  *) echo "robustmq lane: no part $part (single, cluster, logins)"; status=1; continue ;;
  esac
  stop_nodes "$part"
  echo "robustmq lane: the $part part took $(($(date +%s) - part_started)) s"
done

echo "robustmq lane: $(($(date +%s) - started)) s"
# the lane's one count, from each part's JUnit report: the last line
"$python" - "$work" $parts <<'EOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, parts = Path(sys.argv[1]), sys.argv[2:]
passed = failed = skipped = 0
for part in parts:
    report = work / f"{part}.xml"
    if not report.exists():
        failed += 1  # a part that ran no pytest (its RobustMQ never started) counts as a failure
        continue
    for suite in ET.parse(report).getroot().iter("testsuite"):
        tests, skips = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed, failed, skipped = passed + tests - skips - bad, failed + bad, skipped + skips
if passed == 0:
    print("robustmq lane: no test passed against RobustMQ: a lane that skips whole is a failure")
    failed = max(failed, 1)
print(f"lane: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
EOF
count=$?
[ $status -eq 0 ] && [ $count -eq 0 ]

#!/usr/bin/env bash
# RobustMQ 8bd49dc for the real-broker lane (CONTRIBUTING.md, "The real-broker lane").
#
#   testbed/robustmq.sh lane [PYTEST ARGS]         # the lane as CI runs it (.ci/run), on the prebuilt
#   testbed/robustmq.sh node N [--nodes K] [--logins] [--model DIR] [--home DIR]
#                                                  # node N (1-3) of the prebuilt, in the foreground
#   testbed/robustmq.sh unpack                     # the prebuilt's binary into the cache; its path
#   testbed/robustmq.sh build SRC [default|vector-search]   # from source: ~90 min on 2 cores, niced
#   testbed/robustmq.sh start SRC [default|vector-search]   # a source build on loopback, NATS on :4222
#
# The prebuilt: ../shared/robustmq beside the checkout (MQ9_ROBUSTMQ_PREBUILT names another), RobustMQ
# 8bd49dc's vector-search build from the unmodified commit (its README says how it was built; `build`
# below is the recipe). Its listeners take fixed ports, so the lane runs in a network namespace of
# its own (and a PID namespace: nothing it starts outlives it).
#
# SRC (build/start): a work tree of robustmq/robustmq at 8bd49dc (from a git mirror: `git
# --work-tree=SRC checkout 8bd49dc -- .`). The build needs Debian's protobuf-compiler, clang,
# libclang-dev and lld (RobustMQ's .cargo/config.toml links with lld), and the Rust toolchain this
# machine has: RobustMQ pins 1.97.0, which rustup cannot fetch here; 1.95.0 builds it. Each feature
# set builds into a target directory of its own beside SRC. The vector-search build links
# fastembed's ONNX Runtime (ort-sys 2.0.0-rc.9), which would download its library from a CDN this
# machine cannot reach: it links the one in onnxruntime's wheel instead (the `semantic` extra
# installs it), from ORT_LIB_LOCATION, and `start` puts that directory on the library path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
command=${1:?lane, node, build or start}
shift

# --- the prebuilt binary, unpacked once as shared/robustmq/start.sh does -------------------------
prebuilt=${MQ9_ROBUSTMQ_PREBUILT:-$root/../shared/robustmq}
recipe="testbed/robustmq.sh build SRC vector-search (CONTRIBUTING.md, \"The real-broker lane\")"

prebuilt_binary() {
  local sum cache
  sum=$(cut -d' ' -f1 "$prebuilt/bin/broker-server.sha256")
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/mq9-robustmq/$sum
  if [ ! -x "$cache/broker-server" ]; then
    mkdir -p "$cache"
    xz -dc "$prebuilt/bin/broker-server.xz" > "$cache/broker-server.part.$$"
    echo "$sum  $cache/broker-server.part.$$" | sha256sum -c --quiet - \
      || { echo "the unpacked RobustMQ does not match $prebuilt/bin/broker-server.sha256" >&2; exit 1; }
    chmod +x "$cache/broker-server.part.$$" && mv "$cache/broker-server.part.$$" "$cache/broker-server"
  fi
  echo "$cache/broker-server"
}

# Node N's ports: RobustMQ's own cluster files' scheme (config/cluster/server-N.toml at 8bd49dc),
# N-1 thousands (or hundreds) above node 1's defaults, so three nodes share one loopback.
nats_port() { echo $((4222 + ($1 - 1) * 1000)); }
admin_port() { echo $((58080 + $1 - 1)); }

node_config() {  # node_config N NODES HOME LOGINS MODEL
  local n=$1 nodes=$2 home=$3 logins=$4 model=$5 i addrs=""
  for i in $(seq 1 "$nodes"); do addrs="$addrs${addrs:+, }$i = \"127.0.0.1:$((1228 + (i - 1) * 1000))\""; done
  local k=$((n - 1))
  cat <<EOF
cluster_name = "mq9-lane"
broker_id = $n
broker_ip = "127.0.0.1"
roles = ["meta", "broker", "engine"]
grpc_port = $((1228 + k * 1000))
http_port = $(admin_port "$n")
meta_addrs = { $addrs }
# (8bd49dc reads its RocksDB folder from this top-level key)
data_path = "$home/data"

[runtime]
# one partition a mailbox (docs/deploy-robustmq.md: its template's 3 interleaves msg_ids)
default_topic_partition_num = 1

[storage_runtime]
tcp_port = $((1779 + k * 1000))
data_path = ["$home/data/engine"]

[mqtt_runtime.server]
tcp_port = $((1883 + k * 1000))
tls_port = $((1885 + k * 1000))
websocket_port = $((8083 + k * 100))
websockets_port = $((8085 + k * 100))
quic_port = $((9083 + k * 100))

[nats_runtime]
tcp_port = $(nats_port "$n")
tls_port = $((4223 + k * 1000))
ws_port = $((4080 + k * 1000))
wss_port = $((4443 + k * 1000))
auth_required = $logins

[kafka_runtime]
tcp_port = $((9092 + k * 100))

[amqp_runtime]
tcp_port = $((5672 + k * 100))

[log]
log_config = "$home/config/logger.toml"
log_path = "$home/logs"
EOF
  if [ -n "$model" ]; then
    printf '\n[llm_client]\nembedding_model_path = "%s"\n' "$model"
  fi
}

node() {  # node N [--nodes K] [--logins] [--model DIR] [--home DIR]: exec node N in the foreground
  local n=${1:?node number} nodes=1 logins=false model="" home=""
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes=$2; shift 2 ;;
      --logins) logins=true; shift ;;
      --model) model=$(cd "$2" && pwd); shift 2 ;;
      --home) home=$2; shift 2 ;;
      *) echo "node: unknown option $1" >&2; exit 2 ;;
    esac
  done
  [ -x "$prebuilt/start.sh" ] || { echo "no prebuilt RobustMQ at $prebuilt: build one with $recipe" >&2; exit 2; }
  local binary
  binary=$(prebuilt_binary)
  home=${home:-$(mktemp -d)}
  mkdir -p "$home/lib" "$home/data/engine" "$home/logs"
  [ -d "$home/config" ] || cp -r "$prebuilt/config" "$home/"  # its relative defaults (config/certs)
  ln -sf "$prebuilt/lib/libonnxruntime.so.1.20.1" "$home/lib/libonnxruntime.so.1"
  node_config "$n" "$nodes" "$home" "$logins" "$model" > "$home/server.toml"
  echo "RobustMQ 8bd49dc node $n of $nodes in $home; mq9 on nats://127.0.0.1:$(nats_port "$n")"
  cd "$home"
  export LD_LIBRARY_PATH=$home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  exec "$binary" --conf "$home/server.toml"
}

case "$command" in
unpack)
  [ -x "$prebuilt/start.sh" ] || { echo "no prebuilt RobustMQ at $prebuilt: build one with $recipe" >&2; exit 2; }
  prebuilt_binary
  ;;
node)
  node "$@"
  ;;
lane)
  exec "$here/robustmq_lane.sh" "$@"
  ;;
build|start)
  src=$(cd "${1:?the RobustMQ source tree}" && pwd)
  features=${2:-default}
  target="$src/../rmq-target-$features"
  flags=()
  if [ "$features" = "vector-search" ]; then
    flags=(--features vector-search)
    # a directory holding libonnxruntime.so (and .so.1): the wheel's library, linked under both names
    ort=${ORT_LIB_LOCATION:-$src/../ort-lib}
    if [ ! -e "$ort/libonnxruntime.so.1" ]; then
      wheel=$(python3 -c 'import onnxruntime, pathlib; print(next(pathlib.Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so.*")))') \
        || { echo "needs onnxruntime's wheel (pip install onnxruntime) or ORT_LIB_LOCATION" >&2; exit 2; }
      mkdir -p "$ort" && cp "$wheel" "$ort/" && ln -sf "$(basename "$wheel")" "$ort/libonnxruntime.so" \
        && ln -sf "$(basename "$wheel")" "$ort/libonnxruntime.so.1"
    fi
    export ORT_LIB_LOCATION=$ort ORT_PREFER_DYNAMIC_LINK=1 LD_LIBRARY_PATH=$ort${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
  if [ "$command" = build ]; then
    for tool in protoc clang ld.lld; do
      command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install protobuf-compiler clang libclang-dev lld" >&2; exit 2; }
    done
    cd "$src"
    RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-1.95.0} CARGO_TARGET_DIR="$target" \
      nice -n 19 cargo build -j 2 -p cmd --bin broker-server "${flags[@]}"
    echo "built: $target/debug/broker-server"
    exit 0
  fi
  binary="$target/debug/broker-server"
  [ -x "$binary" ] || { echo "not built: $binary (testbed/robustmq.sh build first)" >&2; exit 2; }
  home=$(mktemp -d)
  mkdir -p "$home/logs"
  cp -r "$src/config" "$home/"
  node_config 1 1 "$home" false "${MQ9_ROBUSTMQ_MODEL:-}" > "$home/server.toml"
  cd "$src"  # (its relative defaults: config/certs, ...)
  echo "RobustMQ ($features) in $home; NATS on nats://127.0.0.1:4222"
  exec "$binary" --conf "$home/server.toml"
  ;;
*)
  echo "lane, node, build or start" >&2
  exit 2
  ;;
esac

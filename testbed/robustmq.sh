#!/usr/bin/env bash
# RobustMQ 8bd49dc, built by hand outside this repository, for the real-broker lane (#100;
# CONTRIBUTING.md, "The real-broker lane"). Nothing here runs in CI.
#
#   testbed/robustmq.sh build SRC [default|vector-search]   # ~90 min on 2 cores, niced
#   testbed/robustmq.sh start SRC [default|vector-search]   # on loopback, NATS on :4222
#
# SRC: a work tree of robustmq/robustmq at 8bd49dc (from a git mirror: `git --work-tree=SRC
# checkout 8bd49dc -- .`). The build needs Debian's protobuf-compiler, clang, libclang-dev and
# lld (RobustMQ's .cargo/config.toml links with lld), and the Rust toolchain this machine has:
# RobustMQ pins 1.97.0, which rustup cannot fetch here; 1.95.0 builds it. Each feature set
# builds into a target directory of its own beside SRC. The vector-search build links fastembed's
# ONNX Runtime (ort-sys 2.0.0-rc.9), which would download its library from a CDN this machine
# cannot reach: it links the one in onnxruntime's wheel instead (the `semantic` extra installs it),
# from ORT_LIB_LOCATION, and `start` puts that directory on the library path.
set -euo pipefail
command=${1:?build or start}
src=$(cd "${2:?the RobustMQ source tree}" && pwd)
features=${3:-default}
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

case "$command" in
build)
  for tool in protoc clang ld.lld; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install protobuf-compiler clang libclang-dev lld" >&2; exit 2; }
  done
  cd "$src"
  RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-1.95.0} CARGO_TARGET_DIR="$target" \
    nice -n 19 cargo build -j 2 -p cmd --bin broker-server "${flags[@]}"
  echo "built: $target/debug/broker-server"
  ;;
start)
  binary="$target/debug/broker-server"
  [ -x "$binary" ] || { echo "not built: $binary (testbed/robustmq.sh build first)" >&2; exit 2; }
  home=$(mktemp -d)
  # RobustMQ's minimal config, on loopback, with one partition a mailbox (docs/deploy.md: its
  # template's 3 interleaves msg_ids); a vector-search build embeds with the model directory
  # bench/discovery.py writes when MQ9_ROBUSTMQ_MODEL names it
  cat > "$home/server.toml" <<EOF
cluster_name = "broker-server"
broker_id = 1
broker_ip = "127.0.0.1"
roles = ["meta", "broker", "engine"]
grpc_port = 1228
http_port = 58080
meta_addrs = { 1 = "127.0.0.1:1228" }
# (8bd49dc reads its RocksDB folder from this top-level key; its template's [rocksdb] data_path
# is not read, and without this key every run shares ./data in the source tree)
data_path = "$home/data"

[runtime]
default_topic_partition_num = 1

[storage_runtime]
data_path = ["$home/data/engine"]

[log]
log_config = "$src/config/logger.toml"
log_path = "$home/logs"
EOF
  if [ -n "${MQ9_ROBUSTMQ_MODEL:-}" ]; then
    printf '\n[llm_client]\nembedding_model_path = "%s"\n' "$MQ9_ROBUSTMQ_MODEL" >> "$home/server.toml"
  fi
  cd "$src"  # (its relative defaults: config/certs, ...)
  echo "RobustMQ ($features) in $home; NATS on nats://127.0.0.1:4222"
  exec "$binary" --conf "$home/server.toml"
  ;;
*)
  echo "build or start" >&2
  exit 2
  ;;
esac

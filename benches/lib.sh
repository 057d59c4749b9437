# Shared by the benchmark scripts: process bookkeeping, ports, peers. Source it; it sets
# $repo, $work (a temporary directory removed on exit) and, through build_serin, $SERIN
# (serin-proxy built with the dist profile). Everything listens on 127.0.0.1 only.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Installs Debian packages for the commands given as name:package pairs, if missing.
need_debian() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Sets $OHA, installing oha (a constant-rate HTTP load generator that corrects for coordinated
# omission) from crates.io into .cache/bench-tools once.
need_oha() {
  OHA=$(command -v oha || echo "$repo/.cache/bench-tools/bin/oha")
  if [ ! -x "$OHA" ]; then
    echo "installing oha (cargo install, once)"
    cargo install --quiet --locked oha --root "$repo/.cache/bench-tools"
  fi
}

# Total CPU ticks (user + system) of a process (all its threads) and of its direct children.
cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    if [ -r "/proc/$p/stat" ]; then
      total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    fi
  done
  echo "$total"
}

# Peak resident memory (VmHWM, KiB) of a process plus its direct children.
peak_rss_kib() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/status" ] && total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status")))
  done
  echo "$total"
}

# build_serin: the shipped build (Cargo profile `dist`: fat LTO, one codegen unit).
build_serin() {
  echo "building serin-proxy (profile dist)"
  (cd "$repo" && cargo build --profile dist --quiet --bin serin-proxy)
  SERIN="$repo/target/dist/serin-proxy"
}

# start_backend NAME PORT...: one nginx worker answering "ok" on each port.
start_backend() {
  local name=$1 port listen=""
  shift
  for port in "$@"; do listen+="  server { listen 127.0.0.1:$port; location / { return 200 \"ok\\n\"; } }"$'\n'; done
  mkdir -p "$work/$name"
  cat > "$work/$name/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$name/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
$listen}
CONF
  "$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/$name" -c "$work/$name/nginx.conf" & pids+=($!)
  for port in "$@"; do wait_port "$port"; done
}

# serin_split_yaml PORT PRIMARY CANARY: a Gateway listening on PORT, two serin.dev Backends on
# ports PRIMARY and CANARY, and an HTTPRoute splitting 90/10 between them (the benchmark job).
serin_split_yaml() {
  cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  gatewayClassName: serin
  listeners: [{name: split, port: $1, protocol: HTTP}]
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: primary}
spec: {endpoints: [{host: 127.0.0.1, port: $2}]}
---
apiVersion: serin.dev/v1alpha1
kind: Backend
metadata: {name: canary}
spec: {endpoints: [{host: 127.0.0.1, port: $3}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{name: bench}]
  rules:
  - backendRefs:
    - {group: serin.dev, kind: Backend, name: primary, weight: 90}
    - {group: serin.dev, kind: Backend, name: canary, weight: 10}
EOF
}

# nginx_split_conf DIR PORT PRIMARY CANARY WORKERS [LINE...]: nginx.conf in DIR for nginx as the
# same 90/10 proxy (weighted upstream, keep-alive to the backends, no access log); extra LINEs
# go to the main context.
nginx_split_conf() {
  local dir=$1 port=$2 primary=$3 canary=$4 workers=$5
  shift 5
  mkdir -p "$dir"
  {
    echo "worker_processes $workers;"
    for line in "$@"; do echo "$line"; done
    cat <<EOF
daemon off;
pid $dir/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream split {
    server 127.0.0.1:$primary weight=90;
    server 127.0.0.1:$canary weight=10;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://split;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } > "$dir/nginx.conf"
}

# The median of the numbers on standard input.
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

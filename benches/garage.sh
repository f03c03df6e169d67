# Sourced by the benches: `start_garage DIR` runs a single-node Garage 2.5 (the S3-compatible
# store tests/common/garage.rs uses; `cargo install garage --locked --version 2.5.0`) on free
# loopback ports under DIR, with bucket `tramy` and a key that may use it, and exports the
# standard AWS_* variables tramy's S3 backend reads. GARAGE_PID is its process (the caller kills
# it). Uses the recipe of ../shared/reference/recipes.md.
start_garage() {
  local dir=$1 s3 rpc secret node
  GARAGE=$(command -v garage || echo "$HOME/.cargo/bin/garage")
  [ -x "$GARAGE" ] || { echo "needs garage (cargo install garage --locked --version 2.5.0)" >&2; return 1; }
  mkdir -p "$dir"
  s3=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rpc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
TOML
  RUST_LOG=warn "$GARAGE" -c "$dir/garage.toml" server >"$dir/log" 2>&1 &
  GARAGE_PID=$!
  local g=("$GARAGE" -c "$dir/garage.toml")
  for _ in $(seq 300); do node=$("${g[@]}" node id -q 2>/dev/null) && break; sleep 0.2; done
  [ -n "${node:-}" ] || { echo "garage did not start" >&2; cat "$dir/log" >&2; return 1; }
  "${g[@]}" layout assign -z dc1 -c 1G "${node%%@*}" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  "${g[@]}" bucket create tramy >/dev/null
  export AWS_ACCESS_KEY_ID=GK0123456789abcdef01234567
  export AWS_SECRET_ACCESS_KEY=$secret
  "${g[@]}" key import --yes -n bench "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >/dev/null
  "${g[@]}" bucket allow --read --write --owner tramy --key "$AWS_ACCESS_KEY_ID" >/dev/null
  export AWS_ENDPOINT_URL=http://127.0.0.1:$s3 AWS_REGION=garage AWS_ALLOW_HTTP=true
}

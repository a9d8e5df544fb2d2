#!/usr/bin/env bash
# The Swarm "init job": run the genesis ceremony for node0..node3 ONCE, then create the Docker secrets
# (node keys) and configs (genesis, each node's config.toml) the stack file uses.
#
#   deploy/swarm/init.sh DIR      (DIR: where the ceremony's files are kept, e.g. ./swarm-ceremony)
#
# Never regenerates anything: if DIR already holds a ceremony it is reused as it is, and a secret or
# config that already exists in the swarm is left alone (they are immutable; a new key would be a new
# validator and need a new genesis). Keep DIR safe and private: it holds the node keys and the funded
# account keys (accounts/); the secrets live encrypted in the swarm's raft log.
#
# Environment: LEDGERD_IMAGE (ledgerd:local), LEDGERD_SWARM_PREFIX (ledgerd), LEDGERD_CHAIN_ID
# (ledger-swarm), LEDGERD_CONSENSUS (pbft), LEDGERD_ACCOUNTS (4 funded accounts).
set -euo pipefail

DIR="${1:?usage: deploy/swarm/init.sh DIR}"
IMAGE="${LEDGERD_IMAGE:-ledgerd:local}"
PREFIX="${LEDGERD_SWARM_PREFIX:-ledgerd}"
CHAIN_ID="${LEDGERD_CHAIN_ID:-ledger-swarm}"
CONSENSUS="${LEDGERD_CONSENSUS:-pbft}"
ACCOUNTS="${LEDGERD_ACCOUNTS:-4}"
NODES=4

say() { printf 'swarm-init: %s\n' "$*" >&2; }
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
# Runs ledgerd from the image with DIR mounted at /work, as the caller's uid so the files stay theirs.
ledgerd() { docker run --rm --user "$(id -u):$(id -g)" -v "$DIR:/work" -w /work "$IMAGE" ledgerd "$@"; }

if [ -f "$DIR/genesis/genesis.json" ]; then
  say "a ceremony already exists in $DIR (genesis $(ledgerd genesis hash genesis/genesis.json)); reusing it"
else
  if [ -n "$(ls -A "$DIR")" ]; then
    say "error: $DIR holds files but no finished ceremony; move them away and run again"; exit 1
  fi
  say "running the genesis ceremony in $DIR with $IMAGE"
  for k in $(seq 0 $((NODES - 1))); do
    ledgerd genesis node-info --home "node$k" --name "node$k" --p2p-url "wss://node$k:9001" > "$DIR/node$k.info"
  done
  mkdir -p "$DIR/accounts"
  account_args=()
  for k in $(seq 0 $((ACCOUNTS - 1))); do
    ledgerd keys new --out "accounts/account$k.pem" > /dev/null
    account_args+=(--account "$(ledgerd keys show "accounts/account$k.pem")=1000000000")
  done
  ledgerd genesis init --draft ceremony.json --chain-id "$CHAIN_ID" --consensus "$CONSENSUS" "${account_args[@]}"
  for k in $(seq 0 $((NODES - 1))); do
    ledgerd genesis add-validator --draft ceremony.json --info "$(cat "$DIR/node$k.info")"
  done
  hash="$(ledgerd genesis finalize --draft ceremony.json --out genesis)"
  for k in $(seq 0 $((NODES - 1))); do
    ledgerd genesis node-home --home "node$k" --genesis genesis/genesis.json --peers genesis/peers.json \
      --expect-hash "$hash" --p2p-host 0.0.0.0 --rest-host 0.0.0.0 --rest-port 8001 > /dev/null
  done
  say "genesis $hash"
fi

create() {  # create KIND NAME FILE, unless it exists
  if docker "$1" inspect "$2" > /dev/null 2>&1; then
    say "$1 $2 exists; kept as it is"
  else
    docker "$1" create --label dev.ledgerd.swarm="$PREFIX" "$2" "$3" > /dev/null
    say "created $1 $2"
  fi
}
create config "${PREFIX}_genesis" "$DIR/genesis/genesis.json"
for k in $(seq 0 $((NODES - 1))); do
  create secret "${PREFIX}_node${k}_key" "$DIR/node$k/node_key.pem"
  create config "${PREFIX}_node${k}_config" "$DIR/node$k/config.toml"
done
say "now: LEDGERD_IMAGE=$IMAGE LEDGERD_SWARM_PREFIX=$PREFIX docker stack deploy -c deploy/swarm/ledgerd-stack.yml ledgerd"

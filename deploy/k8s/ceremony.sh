#!/usr/bin/env bash
# Run the genesis ceremony for the four StatefulSet pods ONCE and hand its results to Kubernetes:
# the Secret ledgerd-node-keys (ledgerd-0.pem .. ledgerd-3.pem) and the ConfigMap ledgerd-genesis
# (genesis.json, peers.json) in namespace ledgerd. Then: kubectl apply -k deploy/k8s
#
#   deploy/k8s/ceremony.sh DIR     (DIR keeps the ceremony's files: keep it private, it holds keys)
#
# Never regenerates: an existing ceremony in DIR is reused, and an existing Secret or ConfigMap is
# left alone (delete it by hand only to start a new chain). Needs `ledgerd` (the project's CLI) and
# `kubectl` pointed at the cluster. Environment: LEDGERD_CHAIN_ID (ledger-k8s), LEDGERD_CONSENSUS
# (pbft), LEDGERD_ACCOUNTS (4), LEDGERD_NAMESPACE (ledgerd).
set -euo pipefail
DIR="${1:?usage: deploy/k8s/ceremony.sh DIR}"
NS="${LEDGERD_NAMESPACE:-ledgerd}"
NODES=4
say() { printf 'k8s-ceremony: %s\n' "$*" >&2; }
mkdir -p "$DIR"
if [ -f "$DIR/genesis/genesis.json" ]; then
  say "a ceremony already exists in $DIR (genesis $(ledgerd genesis hash "$DIR/genesis/genesis.json")); reusing it"
else
  [ -z "$(ls -A "$DIR")" ] || { say "error: $DIR holds files but no finished ceremony"; exit 1; }
  for k in $(seq 0 $((NODES - 1))); do
    ledgerd genesis node-info --home "$DIR/ledgerd-$k" --name "ledgerd-$k" \
      --p2p-url "wss://ledgerd-$k.ledgerd-p2p:9001" > "$DIR/ledgerd-$k.info"
  done
  mkdir -p "$DIR/accounts"
  account_args=()
  for k in $(seq 0 $((${LEDGERD_ACCOUNTS:-4} - 1))); do
    ledgerd keys new --out "$DIR/accounts/account$k.pem" > /dev/null
    account_args+=(--account "$(ledgerd keys show "$DIR/accounts/account$k.pem")=1000000000")
  done
  ledgerd genesis init --draft "$DIR/ceremony.json" --chain-id "${LEDGERD_CHAIN_ID:-ledger-k8s}" \
    --consensus "${LEDGERD_CONSENSUS:-pbft}" "${account_args[@]}"
  for k in $(seq 0 $((NODES - 1))); do
    ledgerd genesis add-validator --draft "$DIR/ceremony.json" --info "$(cat "$DIR/ledgerd-$k.info")"
  done
  say "genesis $(ledgerd genesis finalize --draft "$DIR/ceremony.json" --out "$DIR/genesis")"
fi
kubectl get namespace "$NS" > /dev/null 2>&1 || kubectl create namespace "$NS"
if kubectl -n "$NS" get secret ledgerd-node-keys > /dev/null 2>&1; then
  say "Secret ledgerd-node-keys exists; kept as it is"
else
  args=()
  for k in $(seq 0 $((NODES - 1))); do args+=(--from-file="ledgerd-$k.pem=$DIR/ledgerd-$k/node_key.pem"); done
  kubectl -n "$NS" create secret generic ledgerd-node-keys "${args[@]}"
fi
if kubectl -n "$NS" get configmap ledgerd-genesis > /dev/null 2>&1; then
  say "ConfigMap ledgerd-genesis exists; kept as it is"
else
  kubectl -n "$NS" create configmap ledgerd-genesis --from-file="$DIR/genesis/genesis.json" \
    --from-file="$DIR/genesis/peers.json"
fi
say "now: kubectl apply -k deploy/k8s"

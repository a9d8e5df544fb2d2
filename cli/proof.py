"""`ledgerd proof` and `ledgerd verify`: get a proof bundle from a node, check one offline.

    ledgerd proof HASH [--node URL] [--out FILE]        a transaction's bundle
    ledgerd proof --height H [--node URL] [--out FILE]  a block header's bundle (finality only)
    ledgerd verify FILE --genesis GENESIS_FILE          offline: no node is contacted

`verify` exits 0 and prints a JSON summary of what the bundle proves; 1 and one line naming the
first check that failed; 2 for a usage error or a file it cannot read. The format and the checks
are specified in docs/proofs.md; `ledger.proof` implements them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.client import LedgerClient, RequestFailed, normalize_url
from cli.errors import CliError
from consensus.api import Ed25519Verifier
from consensus.factory import ENGINES, verify_certificate
from ledger import keys
from ledger.block import Block, BlockHeader
from ledger.errors import Rejected
from ledger.genesis import Genesis
from ledger.proof import MAX_BUNDLE_BYTES, ProofError, encode_bundle, parse_bundle, verify_bundle

DEFAULT_NODE_URL = "http://127.0.0.1:8001"
MAX_HEIGHT = 2**63 - 1
EXIT_INVALID = 1
EXIT_USAGE = 2


def certificate_signers(engine: str, header: BlockHeader, certificate: Any,
                        validators: tuple[str, ...]) -> tuple[str, ...] | None:
    """`ledger.proof.CertificateCheck` over the engines' own certificate verifiers: the signers of a
    certificate valid for `header` under `validators`, None otherwise (an unknown engine included)."""
    if engine not in ENGINES:
        return None
    # A certificate signs the block hash, which is the header's hash: the transactions are not needed.
    if not verify_certificate(engine, Block(header, ()), certificate, validators, Ed25519Verifier()):
        return None
    if engine == "raft":
        return (str(certificate["leader"]),)
    return tuple(str(seal["validator"]) for seal in certificate["seals"])


def verify_file(path: Path, genesis_path: Path) -> dict[str, Any]:
    """The summary of a valid bundle file; ProofError when it is invalid, OSError/Rejected when a
    file cannot be read or the genesis file is not one."""
    genesis = Genesis.load(genesis_path)
    with path.open("rb") as f:
        raw = f.read(MAX_BUNDLE_BYTES + 1)
    return verify_bundle(parse_bundle(raw), genesis, certificate_signers)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        summary = verify_file(Path(args.file), Path(args.genesis))
    except ProofError as exc:
        print(f"ledgerd verify: INVALID: check {exc.check!r} failed: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    except Rejected as exc:  # the genesis file is missing or is not a genesis
        print(f"ledgerd verify: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"ledgerd verify: error: cannot read {exc.filename or args.file}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    client = LedgerClient(args.node)
    if (args.hash is None) == (args.height is None):
        print("ledgerd proof: error: give a transaction HASH or --height H, not both (see 'ledgerd proof --help')",
              file=sys.stderr)
        return EXIT_USAGE
    path = f"/v1/transactions/{args.hash}/proof" if args.hash is not None else f"/v1/blocks/{args.height}/proof"
    try:
        bundle = client.request("GET", path)
    except RequestFailed as exc:
        raise CliError(f"the node has no proof: {exc}") from None
    if not isinstance(bundle, dict):
        raise CliError(f"{client.base_url}{path} did not answer a proof bundle")
    data = encode_bundle(bundle)
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    try:
        Path(args.out).write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {args.out}; check it offline with: ledgerd verify {args.out} --genesis GENESIS_FILE",
          file=sys.stderr)
    return 0


def _tx_hash(text: str) -> str:
    value = text.strip().lower()
    if not keys.is_hex(value, 64):
        raise argparse.ArgumentTypeError(f"a transaction hash is 64 hex characters, got {text!r}")
    return value


def _height(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--height must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_HEIGHT:
        raise argparse.ArgumentTypeError(f"--height must be between 1 and {MAX_HEIGHT}, got {value}")
    return value


def _node_url(text: str) -> str:
    try:
        return normalize_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_proof_parsers(sub: Any) -> None:
    """Register `proof` and `verify` under the `ledgerd` subcommands `sub` (an argparse subparsers action)."""
    p = sub.add_parser("proof", help="get a proof bundle of a committed transaction (or block) from a node",
                       description="Fetch the proof bundle of a committed transaction: its inclusion, result "
                                   "and finality, in one JSON file anyone can check offline with "
                                   "'ledgerd verify'. With --height, the bundle of a block header (its "
                                   "finality only).")
    p.add_argument("hash", nargs="?", type=_tx_hash, metavar="HASH", help="the transaction hash")
    p.add_argument("--height", type=_height, metavar="H", help="prove the block header at height H instead")
    p.add_argument("--node", type=_node_url, default=os.environ.get("LEDGERD_NODE", DEFAULT_NODE_URL),
                   metavar="URL", help=f"the node's REST URL (default: $LEDGERD_NODE or {DEFAULT_NODE_URL})")
    p.add_argument("--out", metavar="FILE", help="write the bundle to FILE (default: standard output)")
    p.set_defaults(func=cmd_proof)

    v = sub.add_parser("verify", help="check a proof bundle offline against the chain's genesis file",
                       description="Check a proof bundle with nothing but the genesis file: exit 0 and a JSON "
                                   "summary of what it proves, 1 and the first failed check, 2 when a file "
                                   "cannot be read.")
    v.add_argument("file", metavar="FILE", help="the bundle ('ledgerd proof' output)")
    v.add_argument("--genesis", required=True, metavar="GENESIS_FILE", help="the chain's genesis.json")
    v.set_defaults(func=cmd_verify)

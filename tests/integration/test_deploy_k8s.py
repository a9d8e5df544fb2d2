"""deploy/k8s rendered with `kubectl kustomize` and every object validated offline against the
Kubernetes 1.32 schemas (kubernetes-validate, strict: unknown fields are errors). There is no cluster
here, and `kubectl apply --dry-run=client` needs an API server for its own validation, so this is
what CI can check; docs/deploy.md says what was not run on a real cluster.

The init container's script is also run for real (paths moved into a temp dir, the project's
`ledgerd` on PATH): the first start places the key from the Secret and writes the home; a second
start with a different key in the Secret keeps the key on the volume.

Without kubectl this is skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ledger import keys

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.32.0"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is not installed: CI must render deploy/k8s", pytrace=False)
        pytest.skip("kubectl is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / "k8s")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    assert sorted(d["kind"] for d in rendered) == ["Namespace", "PodDisruptionBudget", "Service", "Service",
                                                  "StatefulSet"]
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The validator is not a formality: a misspelt field is refused.
    broken = json.loads(json.dumps(by_kind(rendered, "StatefulSet")[0]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_validators_keep_their_identity_and_data(rendered: list[dict[str, Any]]) -> None:
    sts = by_kind(rendered, "StatefulSet")[0]
    spec = sts["spec"]
    assert spec["replicas"] == 4 and spec["serviceName"] == "ledgerd-p2p"
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pod = spec["template"]["spec"]
    main = pod["containers"][0]
    assert main["readinessProbe"]["exec"]["command"][-1] == "ready"
    assert main["resources"]["requests"] and main["resources"]["limits"]
    assert {"name": "data", "mountPath": "/data"} in main["volumeMounts"]
    headless = next(s for s in by_kind(rendered, "Service") if s["metadata"]["name"] == "ledgerd-p2p")
    # Peers must find each other before any is ready (ready means caught up).
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    pdb = by_kind(rendered, "PodDisruptionBudget")[0]
    assert pdb["spec"]["maxUnavailable"] == 1  # f for 4 validators
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(sts).items()
    assert all(d["metadata"].get("namespace", "ledgerd") == "ledgerd" for d in rendered)


def pod_labels(sts: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = sts["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_init_container_places_the_key_once_and_never_replaces_it(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    assert shutil.which("sh") is not None, "the init container's script needs a POSIX sh to run here"
    script = by_kind(rendered, "StatefulSet")[0]["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
    data, secret, genesis_dir = tmp_path / "data", tmp_path / "keys", tmp_path / "genesis"
    for folder in (data, secret, genesis_dir):
        folder.mkdir()
    local = script.replace("/data/", f"{data}/").replace("/keys/", f"{secret}/").replace("/genesis/", f"{genesis_dir}/")
    node_keys = [keys.PrivateKey.generate() for _ in range(4)]
    for k, key in enumerate(node_keys):
        (secret / f"ledgerd-{k}.pem").write_bytes(key.to_pem())
    ceremony = tmp_path / "ceremony"
    cli = [str(Path(sys.executable).parent / "ledgerd")]
    ceremony.mkdir()
    subprocess.run([*cli, "genesis", "init", "--draft", str(ceremony / "draft.json"), "--chain-id", "k8s-test"],
                   check=True, capture_output=True)
    for k, key in enumerate(node_keys):
        info = json.dumps({"name": f"ledgerd-{k}", "node_id": key.address,
                           "p2p_url": f"wss://ledgerd-{k}.ledgerd-p2p:9001"})
        subprocess.run([*cli, "genesis", "add-validator", "--draft", str(ceremony / "draft.json"), "--info", info],
                       check=True, capture_output=True)
    subprocess.run([*cli, "genesis", "finalize", "--draft", str(ceremony / "draft.json"), "--out", str(genesis_dir)],
                   check=True, capture_output=True)
    env = {**os.environ, "POD_NAME": "ledgerd-2", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    first = subprocess.run(["sh", "-ec", local], capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert keys.PrivateKey.load(data / "home" / "node_key.pem").address == node_keys[2].address
    config = (data / "home" / "config.toml").read_text()
    assert '"wss://ledgerd-0.ledgerd-p2p:9001"' in config and "ledgerd-2.ledgerd-p2p" not in config

    # The Secret changes (by mistake or malice): the validator keeps the key it has.
    (secret / "ledgerd-2.pem").write_bytes(keys.PrivateKey.generate().to_pem())
    second = subprocess.run(["sh", "-ec", local], capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    assert keys.PrivateKey.load(data / "home" / "node_key.pem").address == node_keys[2].address

    # A pod with no key anywhere does not start with a made-up one.
    missing = subprocess.run(["sh", "-ec", local.replace(f"{data}/", f"{tmp_path / 'empty'}/")],
                             capture_output=True, text=True, env={**env, "POD_NAME": "ledgerd-9"}, timeout=60)
    assert missing.returncode != 0 and "no key for ledgerd-9" in missing.stderr

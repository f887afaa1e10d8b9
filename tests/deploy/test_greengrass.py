"""deploy/greengrass: the recipe follows the Greengrass v2 recipe format (recipe.schema.json, written from
AWS's recipe reference), its accessControl allows exactly what GreengrassLink does, build.py makes the
artifact zip with the wheel and prints the recipe with its digest, and the recipe's Run step writes a
config the daemon accepts. (The IPC code itself is tested in tests/link/test_greengrass.py.)"""

from __future__ import annotations

import base64
import copy
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
import yaml

from facewatchd.app.config import load_config
from facewatchd.link.greengrass import GreengrassLink, GreengrassLinkConfig
from facewatchd.messages import uplink_topic

HERE = Path(__file__).parents[2] / "deploy" / "greengrass"
THING_VAR = "{iot:thingName}"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((HERE / "recipe.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((HERE / "recipe.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """build.py run once: (output folder, what it printed)."""
    out = tmp_path_factory.mktemp("greengrass")
    command = [sys.executable, str(HERE / "build.py"), "--out", str(out), "--bucket", "my-bucket"]
    if _setuptools_builds_wheels():
        command.append("--no-build-isolation")  # offline and faster: this environment's setuptools
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return out, run.stdout


def _setuptools_builds_wheels() -> bool:
    """setuptools >= 70.1 builds wheels by itself (older ones need the `wheel` package)."""
    try:
        return tuple(int(part) for part in metadata.version("setuptools").split(".")[:2]) >= (70, 1)
    except (metadata.PackageNotFoundError, ValueError):
        return False


def errors(schema: dict[str, Any], document: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]


def test_the_recipe_follows_the_schema(schema: dict[str, Any], recipe: dict[str, Any]) -> None:
    assert errors(schema, recipe) == []
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentDependencies"]["aws.greengrass.ShadowManager"]["VersionRequirement"]


def _acl(recipe: dict[str, Any], service: str) -> dict[str, Any]:
    [policy] = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"][service].values()
    return policy  # type: ignore[no-any-return]


_MISTAKES: dict[str, Callable[[dict[str, Any]], None]] = {
    "another format version": lambda r: r.update(RecipeFormatVersion="2021-01-01"),
    "a version that is not semver": lambda r: r.update(ComponentVersion="1.0"),
    "an AWS component name": lambda r: r.update(ComponentName="aws.greengrass.FaceWatch"),
    "no manifests": lambda r: r.pop("Manifests"),
    "a misspelt key": lambda r: r.update(Lifecycles={}),
    "Run and Startup together": lambda r: r["Manifests"][0]["Lifecycle"].update(Startup="facewatchd run"),
    "a timeout that is not a number": lambda r: r["Manifests"][0]["Lifecycle"]["Install"].update(Timeout="soon"),
    "a Skipif that is no check": lambda r: r["Manifests"][0]["Lifecycle"]["Install"].update(Skipif="maybe"),
    "an unknown archive type": lambda r: r["Manifests"][0]["Artifacts"][0].update(Unarchive="TAR"),
    "an artifact not in S3": lambda r: r["Manifests"][0]["Artifacts"][0].update(URI="https://example.com/a.zip"),
    "a policy without resources": lambda r: _acl(r, "aws.greengrass.ShadowManager").pop("resources"),
    "an operation without its namespace": lambda r: _acl(r, "aws.greengrass.ipc.mqttproxy").update(
        operations=["PublishToIoTCore"]),
}


@pytest.mark.parametrize("mistake", _MISTAKES)
def test_the_schema_catches_mistakes(schema: dict[str, Any], recipe: dict[str, Any], mistake: str) -> None:
    broken = copy.deepcopy(recipe)
    _MISTAKES[mistake](broken)
    assert errors(schema, broken), f"the schema accepted a recipe with {mistake}"


def _policy(recipe: dict[str, Any], service: str) -> tuple[set[str], list[str]]:
    policies = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"][service].values()
    return {op for p in policies for op in p["operations"]}, [r for p in policies for r in p["resources"]]


def _allowed(resources: list[str], resource: str) -> bool:
    return any(fnmatch.fnmatchcase(resource, pattern) for pattern in resources)


@pytest.mark.parametrize("shadow_name", [None, "facewatchd"])
def test_access_control_allows_what_the_link_does_and_no_more(recipe: dict[str, Any], shadow_name: str | None) -> None:
    link = GreengrassLink(THING_VAR, GreengrassLinkConfig(shadow_name=shadow_name), ipc_client=object())
    shadow = f"$aws/things/{THING_VAR}/shadow" + (f"/name/{shadow_name}" if shadow_name else "")

    operations, resources = _policy(recipe, "aws.greengrass.ipc.mqttproxy")
    assert operations == {"aws.greengrass#PublishToIoTCore"} and resources == [uplink_topic(THING_VAR)]
    operations, resources = _policy(recipe, "aws.greengrass.ShadowManager")
    assert operations == {"aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow"}
    assert _allowed(resources, shadow) and not _allowed(resources, "$aws/things/other/shadow")
    operations, resources = _policy(recipe, "aws.greengrass.ipc.pubsub")
    assert operations == {"aws.greengrass#SubscribeToTopic"}
    assert _allowed(resources, link.delta_topic) and not _allowed(resources, f"{shadow}/update/accepted")
    assert all(THING_VAR in r for s in ("aws.greengrass.ShadowManager", "aws.greengrass.ipc.pubsub",
                                        "aws.greengrass.ipc.mqttproxy") for r in _policy(recipe, s)[1])


def test_build_makes_the_zip_with_the_wheel_and_prints_the_recipe(
        built: tuple[Path, str], schema: dict[str, Any]) -> None:
    out, printed = built
    artifact = out / "facewatchd.zip"
    with zipfile.ZipFile(artifact) as zf:
        names = sorted(zf.namelist())
        [wheel_name] = [n for n in names if n.endswith(".whl")]
        assert names == sorted([wheel_name, "greengrass.toml"])
        wheel = out / wheel_name
        wheel.write_bytes(zf.read(wheel_name))
    with open(HERE.parents[1] / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert wheel_name == f"facewatchd-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        content = set(whl.namelist())
    assert {"facewatchd/link/greengrass.py", "facewatchd/link/awsiot.py", "facewatchd/cli.py"} <= content
    assert any(n.startswith("facewatchd/vision/models/") and n.endswith(".onnx") for n in content)
    assert not any("__pycache__" in n for n in content)

    recipe = yaml.safe_load(printed)
    assert (out / "recipe.yaml").read_text() == printed and errors(schema, recipe) == []
    [entry] = recipe["Manifests"][0]["Artifacts"]
    assert entry["Digest"] == base64.b64encode(hashlib.sha256(artifact.read_bytes()).digest()).decode()
    assert entry["Algorithm"] == "SHA-256" and entry["Unarchive"] == "ZIP"
    assert entry["URI"] == f"s3://my-bucket/com.facewatchd.FaceWatch/{version}/facewatchd.zip"
    assert recipe["ComponentVersion"] == version
    assert "facewatchd/facewatchd-*.whl" in recipe["Manifests"][0]["Lifecycle"]["Install"]["Script"]


def _interpolate(script: str, variables: dict[str, str]) -> str:
    """What the nucleus does to a lifecycle script before running it."""
    for name, value in variables.items():
        script = script.replace("{" + name + "}", value)
    assert "{" not in script.replace("${", ""), f"an unknown recipe variable is left in:\n{script}"
    return script


@pytest.mark.parametrize("config_path", ["", "etc/facewatchd.toml"])
def test_the_run_step_starts_the_daemon_on_a_valid_config(built: tuple[Path, str], tmp_path: Path,
                                                          config_path: str) -> None:
    out, printed = built
    decompressed, work = tmp_path / "artifacts-unarchived", tmp_path / "work"
    with zipfile.ZipFile(out / "facewatchd.zip") as zf:
        zf.extractall(decompressed / "facewatchd")
    (work / "venv" / "bin").mkdir(parents=True)
    (work / "venv" / "bin" / "facewatchd").symlink_to(Path(sys.executable).parent / "facewatchd")

    recipe = yaml.safe_load(printed)
    script = _interpolate(recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"], {
        "configuration:/configPath": config_path,
        "configuration:/cameraSource": recipe["ComponentConfiguration"]["DefaultConfiguration"]["cameraSource"],
        "iot:thingName": "gg-core-7", "work:path": str(work), "artifacts:decompressedPath": str(decompressed)})
    assert '/venv/bin/facewatchd" run --config "$CONFIG"' in script
    script = script.replace(" run --config ", " check-config --config ")  # validate instead of running
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=HERE.parents[1], env={**os.environ, "NO_COLOR": "1"})
    assert run.returncode == 0, run.stderr
    if config_path:
        assert "link local" in run.stdout and not (work / "facewatchd.toml").exists()
        return
    assert "link greengrass" in run.stdout
    config = load_config(work / "facewatchd.toml")
    assert config.device.thing == "gg-core-7" and config.device.state_dir == work / "state"
    assert config.cameras[0].source == "/dev/video0"
    assert isinstance(config.link, GreengrassLinkConfig)

"""Build facewatchd's Greengrass component artifact and print its recipe.

    python deploy/greengrass/build.py [--out build/greengrass] [--bucket BUCKET] [--no-build-isolation]

Writes OUT/facewatchd.zip: the facewatchd wheel (`pip wheel --no-deps`, built from a copy of the sources
so the working tree gets no build/ or egg-info) and greengrass.toml, the config the recipe's Run step
fills in when the component has no configPath. Then writes OUT/recipe.yaml: deploy/greengrass/recipe.yaml
with the version from pyproject.toml, the artifact's S3 URI and its SHA-256 digest, and prints it.
Upload the zip to that URI, then create the component from the printed recipe (see README.md here).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = Path(__file__).resolve().parent / "recipe.yaml"
ARTIFACT = "facewatchd.zip"
SOURCES = ("pyproject.toml", "README.md", "facewatchd", "plugins")

# The config a component runs with when configPath is empty. The recipe's Run step replaces the
# @…@ markers with the core device's thing name, the component's work folder and cameraSource.
GREENGRASS_TOML = """\
# facewatchd as an AWS IoT Greengrass component (written by deploy/greengrass/build.py).
[device]
thing = "@THING_NAME@"
state_dir = "@STATE_DIR@"

[logging]
format = "json"                  # the nucleus keeps component logs; JSON lines read best there

[[cameras]]
id = "camera"
source = "@CAMERA_SOURCE@"

[link]
type = "greengrass"              # IPC: PublishToIoTCore, ShadowManager, local delta topic
"""


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def build_wheel(work: Path, isolated: bool) -> Path:
    """`pip wheel --no-deps` of a copy of the sources; returns the wheel's path."""
    source = work / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    wheels = work / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source)]
    if not isolated:
        command.insert(4, "--no-build-isolation")
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"pip wheel failed ({run.returncode}):\n{run.stdout}{run.stderr}")
    [wheel] = wheels.glob("facewatchd-*.whl")
    return wheel


def write_artifact(wheel: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / ARTIFACT
    with zipfile.ZipFile(artifact, "w") as zf:
        zf.write(wheel, wheel.name, compress_type=zipfile.ZIP_STORED)  # a wheel is already compressed
        zf.writestr("greengrass.toml", GREENGRASS_TOML, compress_type=zipfile.ZIP_DEFLATED)
    return artifact


def digest(path: Path) -> str:
    """Greengrass's artifact digest: base64 of the SHA-256."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return base64.b64encode(sha.digest()).decode()


def recipe_for(artifact: Path, version: str, bucket: str) -> dict[str, Any]:
    recipe: dict[str, Any] = yaml.safe_load(RECIPE.read_text())
    recipe["ComponentVersion"] = version
    [manifest] = recipe["Manifests"]
    [entry] = manifest["Artifacts"]
    entry["URI"] = f"s3://{bucket}/{recipe['ComponentName']}/{version}/{ARTIFACT}"
    entry["Digest"] = digest(artifact)
    entry["Algorithm"] = "SHA-256"
    return recipe


class _RecipeDumper(yaml.SafeDumper):
    """Writes multi-line strings (the lifecycle scripts) as YAML literal blocks, readable as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_RecipeDumper.add_representer(str, _str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "greengrass", help="output folder")
    parser.add_argument("--bucket", default="BUCKET", help="S3 bucket the artifact is uploaded to")
    parser.add_argument("--no-build-isolation", action="store_true",
                        help="build the wheel with this environment's setuptools (offline)")
    args = parser.parse_args(argv)
    version = project_version()
    with tempfile.TemporaryDirectory(prefix="facewatchd-gg-") as tmp:
        artifact = write_artifact(build_wheel(Path(tmp), isolated=not args.no_build_isolation), args.out)
    text = yaml.dump(recipe_for(artifact, version, args.bucket), Dumper=_RecipeDumper, sort_keys=False, width=120)
    (args.out / "recipe.yaml").write_text(text)
    print(text, end="")
    print(f"# artifact: {artifact} ({artifact.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

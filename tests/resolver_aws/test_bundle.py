"""The Lambda bundle that `make -C deploy/lambda deploy` ships: handler.py, the facewatchd sources and
deploy/lambda/requirements.txt. The handler must resolve a real face with only those packages
importable (no OpenCV, no pluggy), and the Makefile must build what template.yaml deploys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from cfnlint.decode import cfn_yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.aws import face_crop, face_query, persons, query_record, sqs_event

LAMBDA_DIR = Path(__file__).parents[2] / "deploy" / "lambda"
REPO = LAMBDA_DIR.parents[1]


def requirement_closure(path: Path) -> set[str]:
    """Every distribution pip installs for the requirements file, from the installed metadata."""
    todo = [Requirement(line.split("#")[0].strip()) for line in path.read_text().splitlines()
            if line.split("#")[0].strip()]
    seen: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        for raw in metadata.requires(name) or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in seen[name] | {""}):
                todo.append(dep)
    return set(seen)


def importable_modules(distributions: set[str]) -> list[str]:
    return sorted(top for top, dists in metadata.packages_distributions().items()
                  if any(canonicalize_name(d) in distributions for d in dists))


# Runs with -S (no .pth hooks, no site-packages but the one put on the path) and refuses every
# top-level module from site-packages that requirements.txt does not bring.
ONLY_THE_BUNDLE = """
import importlib.abc, importlib.machinery, json, sys
allowed = set(json.loads(sys.argv[1]))
lambda_dir, repo, site_packages, event_path = sys.argv[2:6]
class OnlyTheBundle(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if "." in name or name in allowed:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        where = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), ""))
        if where and where.startswith(site_packages):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the Lambda bundle)", name=name)
        return None
sys.meta_path.insert(0, OnlyTheBundle())
sys.path[:0] = [lambda_dir, repo]
sys.path.append(site_packages)
import cleanup, handler  # every entry point imports with only the bundle
print(json.dumps(handler.handler(json.loads(open(event_path).read()), None)))
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))))
"""


def test_handler_resolves_a_face_with_only_the_requirements(aws_stack, tmp_path):
    allowed = importable_modules(requirement_closure(LAMBDA_DIR / "requirements.txt"))
    assert {"aioboto3", "numpy", "pydantic", "structlog", "botocore"} <= set(allowed)
    assert "cv2" not in allowed and "pluggy" not in allowed  # device-only packages stay out of the bundle
    query = face_query(face_crop("obama.jpg"), aws_stack.thing)
    event = tmp_path / "event.json"
    event.write_text(json.dumps(sqs_event(query_record(query))))

    run = subprocess.run([sys.executable, "-S", "-c", ONLY_THE_BUNDLE, json.dumps(allowed), str(LAMBDA_DIR),
                          str(REPO), sysconfig.get_paths()["purelib"], str(event)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, f"the Lambda bundle cannot run the handler:\n{run.stderr[-3000:]}"
    result, imported = (json.loads(line) for line in run.stdout.strip().splitlines()[-2:])
    assert result == {"batchItemFailures": []}
    assert "cv2" not in imported
    [person_id] = persons(aws_stack)
    assert aws_stack.desired()["faces"][query.face_id]["person_id"] == person_id


def test_makefile_builds_what_the_template_deploys():
    template = cfn_yaml.load(str(LAMBDA_DIR / "template.yaml"))
    function = template["Globals"]["Function"]
    plan = subprocess.run(["make", "-n", "-C", str(LAMBDA_DIR), "deploy"], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    build_dir = function["CodeUri"].rstrip("/")
    assert f"--target {build_dir} " in plan and "-r requirements.txt" in plan
    assert f"cp -R ../../facewatchd {build_dir}/facewatchd" in plan
    [copy] = [line for line in plan.splitlines() if line.startswith("cp ") and line.endswith(f" {build_dir}/")]
    modules = {f"{r['Properties']['Handler'].split('.')[0]}.py" for r in template["Resources"].values()
               if r["Type"] == "AWS::Serverless::Function"}
    assert modules == {"handler.py", "cleanup.py"} and modules <= set(copy.split()[1:-1])  # every entry point
    # Linux wheels for the template's runtime and architecture, whatever machine builds the bundle.
    version = re.fullmatch(r"python(3\.\d+)", function["Runtime"]).group(1)
    assert f"--python-version {version}" in plan and function["Architectures"] == ["x86_64"]
    assert "--platform manylinux2014_x86_64" in plan and "--only-binary=:all:" in plan
    assert re.search(r"sam deploy --template-file template.yaml --capabilities CAPABILITY_IAM", plan)

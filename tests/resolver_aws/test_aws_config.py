"""`[resolver] type = "aws"` in the config file: chosen by its type, checked key by key with path-based
errors, and usable on a machine without the aws extra (validation needs no SDK)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facewatchd.app.config import load_config, parse_config
from facewatchd.config import ConfigError
from facewatchd.resolver.aws import AwsResolverConfig
from facewatchd.resolver.local import LocalResolverConfig
from tests.support.daemon import ROOT

AWS = 'type = "aws"\nbucket = "facewatchd-crops"\ntable = "facewatchd"\ncollection_id = "faces"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "facewatchd.toml"
    path.write_text(text)
    return path


def test_resolver_type_selects_its_schema(tmp_path):
    config = load_config(write(tmp_path, f"[resolver]\n{AWS}region = \"eu-west-1\"\nface_match_threshold = 90\n"))
    assert isinstance(config.resolver, AwsResolverConfig)
    assert (config.resolver.region, config.resolver.face_match_threshold) == ("eu-west-1", 90)
    # A [resolver] table without `type` is the embedded one, as it always was.
    assert isinstance(parse_config({"resolver": {"templates_per_person": 3}}).resolver, LocalResolverConfig)
    assert isinstance(parse_config({}).resolver, LocalResolverConfig)


@pytest.mark.parametrize("table, error", [
    ('type = "s3"\n', "resolver.type: must be one of 'local', 'aws', 'postgresql', got 's3'"),
    ('type = "aws"\nbucket = "b1"\ntable = "tbl"\n', "resolver.collection_id: required key is missing"),
    (AWS + "face_match_threshold = 101\n", "resolver.face_match_threshold: must be <= 100, got 101"),
    (AWS + 'quality_filter = "BEST"\n', "resolver.quality_filter: "),
    (AWS + 'data_dir = "x"\n', "resolver.data_dir: unknown key"),  # a local key in an aws table
    ('type = "local"\nbucket = "b1"\n', "resolver.bucket: unknown key"),
])
def test_errors_name_file_and_key_path(tmp_path, table, error):
    path = write(tmp_path, f"[resolver]\n{table}")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: {error}" in str(e.value)


def test_cameras_on_the_local_link_need_the_local_resolver():
    aws = {"type": "aws", "bucket": "bkt", "table": "tbl", "collection_id": "c"}
    camera = {"id": "door", "source": 0}
    with pytest.raises(ConfigError, match=r'^link: type "local" runs the resolver in the daemon, which needs '
                                          r'resolver.type = "local", not "aws"'):
        parse_config({"cameras": [camera], "resolver": aws})
    # An operator's config (no cameras) or a device on a cloud link may name the AWS resolver.
    assert parse_config({"resolver": aws}).resolver.type == "aws"
    on_mqtt = parse_config({"cameras": [camera], "resolver": aws, "link": {"type": "mqtt", "host": "h"}})
    assert on_mqtt.link.type == "mqtt"


def test_without_the_aws_extra_configs_validate_and_aws_commands_say_what_to_install(tmp_path):
    path = write(tmp_path, f"[resolver]\n{AWS}")
    script = f"""
import contextlib, io, json, sys
for name in ("aioboto3", "aiobotocore", "boto3", "botocore"):
    sys.modules[name] = None  # as if the aws extra were not installed
from facewatchd.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    check = main(["check-config", "--config", {str(path)!r}])
    faces = main(["faces", "list", "--config", {str(path)!r}])
print(json.dumps({{"check": check, "faces": faces, "out": out.getvalue(), "err": err.getvalue(),
                  "sdk": sorted(m for m in sys.modules if m.split(".")[0] in ("aioboto3", "boto3", "botocore")
                                and sys.modules[m] is not None)}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["check"] == 0 and f"{path}: ok" in result["out"]
    assert result["faces"] == 2 and 'resolver.type = "aws" needs the aws extra' in result["err"]
    assert result["sdk"] == []

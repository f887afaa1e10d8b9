"""deploy/lambda/template.yaml: cfn-lint finds no error, and the template matches the code (table keys,
handler names, environment) and the security rules (least privilege, device policy per thing)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from facewatchd.resolver.aws import TABLE_KEY_SCHEMA, TTL_ATTRIBUTE
from tests.support.aws import handler_module, lambda_module

TEMPLATE = Path(__file__).parents[2] / "deploy" / "lambda" / "template.yaml"
THING = "${!iot:Connection.Thing.ThingName}"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def _of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_cfn_lint_finds_no_error():
    run = subprocess.run([sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())",
                          str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert run.returncode & 2 == 0, f"cfn-lint errors:\n{run.stdout}{run.stderr}"  # bit 2: errors


def test_table_matches_the_adapter(template):
    props = template["Resources"]["FacesTable"]["Properties"]
    assert props["KeySchema"] == TABLE_KEY_SCHEMA and props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}


def test_bucket_is_private_encrypted_and_expires_crops(template):
    [bucket] = _of_type(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    [expiry] = [r for r in props["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiry["ExpirationInDays"] == {"Ref": "RetentionDays"} and expiry["Prefix"] == "faces/"


def test_iam_is_least_privilege(template):
    created = set(template["Resources"])
    for name, role in _of_type(template, "AWS::IAM::Role").items():
        for st in _statements(role):
            assert st["Effect"] == "Allow" and not any("*" in a for a in _as_list(st["Action"])), (name, st)
            for res in _as_list(st["Resource"]):
                assert isinstance(res, dict), f"{name}/{st.get('Sid')}: literal resource {res!r}"
                if "Fn::GetAtt" in res:
                    assert res["Fn::GetAtt"][0] in created
                elif st.get("Sid") == "Shadows":  # things are made per device, after the stack
                    assert res["Fn::Sub"].endswith(":thing/${ThingNamePrefix}*")
                else:
                    sub = res["Fn::Sub"]
                    assert sub.startswith("${") and sub[2:].split(".")[0] in created, (name, sub)


def test_the_resolver_reads_its_queue_with_partial_batch_failures(template):
    fn = template["Resources"]["ResolverFunction"]["Properties"]
    [event] = fn["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["FacesQueue", "Arn"]}
    queue = template["Resources"]["FacesQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["FacesDeadLetterQueue", "Arn"]}
    [rule] = _of_type(template, "AWS::IoT::TopicRule").values()
    payload = rule["Properties"]["TopicRulePayload"]
    assert payload["Sql"] == "SELECT *, topic() AS topic FROM 'facewatchd/+/faces/unknown'"
    assert payload["Actions"][0]["Sqs"]["QueueUrl"] == {"Ref": "FacesQueue"}


def test_handlers_and_environment_match_the_code(template):
    mod = handler_module()
    functions = _of_type(template, "AWS::Serverless::Function")
    assert {f["Properties"]["Handler"] for f in functions.values()} == {"handler.handler", "handler.operator_handler",
                                                                       "cleanup.handler"}
    for f in functions.values():
        module, function = f["Properties"]["Handler"].split(".")
        assert callable(getattr(lambda_module(module), function))
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    env = {k: "x" for k in variables} | {"FACE_MATCH_THRESHOLD": "80", "MAX_FACES": "1", "RETENTION_DAYS": "30",
                                         "QUALITY_FILTER": "AUTO", "BATCH_CONCURRENCY": "1",
                                         "ENSURE_COLLECTION": "false", "COLLECTION_ID": "c", "BUCKET": "bkt",
                                         "TABLE": "tbl", "DLQ_URL": "https://sqs/dlq", "UNCERTAIN_ABOVE": "65",
                                         "LEARN_THRESHOLD": "97", "TEMPLATES_PER_PERSON": "3"}
    settings = mod.Settings.from_env(env)
    assert (settings.resolver.bucket, settings.resolver.table, settings.dlq_url) == ("bkt", "tbl", "https://sqs/dlq")
    r = settings.resolver
    assert (r.uncertain_above, r.learn_threshold, r.templates_per_person) == (65, 97, 3)
    assert settings.ensure_collection is False


def test_device_policy_is_scoped_to_the_connected_thing(template):
    [policy] = _of_type(template, "AWS::IoT::Policy").values()
    by_action = {}
    for st in policy["Properties"]["PolicyDocument"]["Statement"]:
        resources = [r["Fn::Sub"] for r in _as_list(st["Resource"])]
        assert all(THING in r for r in resources), st
        by_action[st["Action"]] = resources
    assert set(by_action) == {"iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"}
    assert [r.split("${AWS::AccountId}:", 1)[1] for r in by_action["iot:Connect"]] == [f"client/{THING}"]
    assert sorted(r.split("${AWS::AccountId}:", 1)[1] for r in by_action["iot:Publish"]) == sorted(
        [f"topic/facewatchd/{THING}/*", f"topic/$aws/things/{THING}/shadow/*"])
    assert [r.split("${AWS::AccountId}:", 1)[1] for r in by_action["iot:Subscribe"]] == [
        f"topicfilter/$aws/things/{THING}/shadow/*"]


def test_idempotency_table_matches_powertools_and_only_the_resolver_uses_it(template):
    mod = handler_module()
    tables = _of_type(template, "AWS::DynamoDB::Table")
    assert set(tables) == {"FacesTable", "IdempotencyTable"}
    props = tables["IdempotencyTable"]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": mod.IDEMPOTENCY_KEY, "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": mod.IDEMPOTENCY_KEY, "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": mod.IDEMPOTENCY_TTL_ATTRIBUTE, "Enabled": True}
    resolver = template["Resources"]["ResolverFunction"]["Properties"]
    assert resolver["Environment"]["Variables"] == {"IDEMPOTENCY_TABLE": {"Ref": "IdempotencyTable"}}
    users = {(name, st["Sid"]): sorted(_as_list(st["Action"]))
             for name, role in _of_type(template, "AWS::IAM::Role").items() for st in _statements(role)
             if {"Fn::GetAtt": ["IdempotencyTable", "Arn"]} in _as_list(st["Resource"])}
    # What powertools' DynamoDBPersistenceLayer calls: get, conditional put, update on success, delete on failure.
    assert users == {("ResolverRole", "Idempotency"): ["dynamodb:DeleteItem", "dynamodb:GetItem",
                                                       "dynamodb:PutItem", "dynamodb:UpdateItem"]}


def test_alarms_watch_dead_letters_errors_throttles_and_queue_age(template):
    mod = handler_module()
    alarms = _of_type(template, "AWS::CloudWatch::Alarm")
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"] for a in alarms.values()}
    assert set(watched) == {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/Lambda", "Errors"),
                            (mod.METRICS_NAMESPACE, "RekognitionThrottles"),
                            ("AWS/SQS", "ApproximateAgeOfOldestMessage")}
    dims = {k: p["Dimensions"] for k, p in watched.items()}
    assert dims[("AWS/SQS", "ApproximateNumberOfMessagesVisible")] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["FacesDeadLetterQueue", "QueueName"]}}]
    assert dims[("AWS/SQS", "ApproximateAgeOfOldestMessage")] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["FacesQueue", "QueueName"]}}]
    assert dims[("AWS/Lambda", "Errors")] == [{"Name": "FunctionName", "Value": {"Ref": "ResolverFunction"}}]
    # The custom metric as handler.py emits it (EMF adds the service dimension).
    assert dims[(mod.METRICS_NAMESPACE, "RekognitionThrottles")] == [{"Name": "service", "Value": mod.METRICS_SERVICE}]
    for props in watched.values():
        assert props["ComparisonOperator"] == "GreaterThanThreshold" and props["TreatMissingData"] == "notBreaching"
        # Mail only when an address is given: the topic exists only then.
        assert props["AlarmActions"] == {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
    assert template["Resources"]["AlarmTopic"]["Condition"] == "HasAlarmEmail"
    assert watched[("AWS/SQS", "ApproximateAgeOfOldestMessage")]["Threshold"] == {"Ref": "MaxMessageAgeSeconds"}
    assert all(p["Threshold"] == 0 for k, p in watched.items() if k[1] != "ApproximateAgeOfOldestMessage")


def test_dashboard_is_json_and_shows_the_metrics_and_alarms(template):
    mod = handler_module()
    [dashboard] = _of_type(template, "AWS::CloudWatch::Dashboard").values()
    body, names = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert set(names) == {"Queue", "DeadLetters"}
    for ref in re.findall(r"\$\{([^}]+)\}", body):  # every ${...} names a parameter, resource or local name
        assert ref in names or ref.split(".")[0] in template["Resources"] or ref.startswith("AWS::"), ref
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    metrics = [m for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"]]
    assert [mod.METRICS_NAMESPACE, "FacesResolved", "service", mod.METRICS_SERVICE] in metrics
    assert {m[1] for m in metrics} >= {"NewPersons", "Refusals", "RekognitionThrottles", "Errors",
                                       "ApproximateAgeOfOldestMessage"}
    [alarm_widget] = [w for w in widgets if w["type"] == "alarm"]
    shown = set(re.findall(r"\$\{(\w+)\.Arn\}", body))
    assert len(alarm_widget["properties"]["alarms"]) == 4 and shown == set(_of_type(template, "AWS::CloudWatch::Alarm"))


def test_the_cleanup_runs_on_a_schedule_with_only_what_forgetting_needs(template):
    fn = template["Resources"]["CleanupFunction"]["Properties"]
    [event] = fn["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == {"Ref": "CleanupSchedule"}
    assert fn["Environment"]["Variables"]["UNNAMED_PERSON_DAYS"] == {"Ref": "UnnamedPersonDays"}
    assert "ReservedConcurrentExecutions" not in fn  # new accounts (10 concurrent) could not deploy it; sweeps are idempotent
    actions = {a for st in _statements(template["Resources"]["CleanupRole"]) for a in _as_list(st["Action"])}
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:DeleteObject", "dynamodb:Scan",
                       "dynamodb:Query", "dynamodb:BatchWriteItem", "rekognition:ListFaces", "rekognition:DeleteFaces",
                       "iot:GetThingShadow", "iot:UpdateThingShadow"}
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"], UNNAMED_PERSON_DAYS="14",
               BUCKET="bkt", TABLE="tbl", COLLECTION_ID="c", RETENTION_DAYS="30")
    settings = lambda_module("cleanup").CleanupSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert (settings.resolver.bucket, settings.resolver.table, settings.unnamed_person_days) == ("bkt", "tbl", 14)

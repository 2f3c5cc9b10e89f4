"""The SAM template expands and lints clean, broken copies fail, and every production
setting reaches the compute resource that reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from emlib.settings import Settings
from infra.validate import TEMPLATE_PATH, errors_in, load_template, validate

REPO_ROOT = Path(__file__).resolve().parents[2]

# Only meaningful on a developer machine (folders, local ports, where Chromium lives).
LOCAL_ONLY = {"DATA_DIR", "FUNCTIONS_HOST", "FUNCTIONS_PORT", "CHROMIUM_PATH", "ORDERBOOK_ENGINE"}
# Read only by the orderbook host; they belong on its ECS task, not on the Lambda function.
ORDERBOOK_ONLY = {
    "ORDERBOOK_SHARD_ID",
    "ORDERBOOK_SYMBOLS",
    "WAL_DIR",
    "FSYNC_POLICY",
    "FSYNC_EVERY_N",
    "FSYNC_INTERVAL_MS",
    "SNAPSHOT_INTERVAL_S",
    "SNAPSHOT_EVERY_RECORDS",
    "SNAPSHOT_IN_CHILD",
    "WAL_SEGMENT_BYTES",
    "REPLAY_BUFFER_SIZE",
    "WAL_PRUNE",
    "JOURNAL_SIZE",
}
RUNNER_ONLY = {"RUNNER_CONTEXTS"}
# Settings refuses to start in production without these (emlib.settings).
PRODUCTION_REQUIRED = {"APP_ENV", "DATABASE_URL", "HMAC_KEYS", "AUDIT_HMAC_KEY", "JWT_SECRET"}


def setting_names() -> set[str]:
    names = {field.alias for field in Settings.model_fields.values()}
    assert None not in names, "every setting has an environment alias"
    return {n for n in names if n is not None}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def lambda_env(template: dict[str, Any]) -> dict[str, Any]:
    fn = template["Resources"]["FunctionsApi"]
    assert fn["Type"] == "AWS::Serverless::Function"
    variables: dict[str, Any] = fn["Properties"]["Environment"]["Variables"]
    return variables


def container_env_names(template: dict[str, Any], task: str) -> dict[str, Any]:
    """Names set on the task's container, from Environment (value) and Secrets (ValueFrom)."""
    containers = template["Resources"][task]["Properties"]["ContainerDefinitions"]
    assert len(containers) == 1
    out: dict[str, Any] = {e["Name"]: e["Value"] for e in containers[0].get("Environment", [])}
    for secret in containers[0].get("Secrets", []):
        assert secret["Name"] not in out, f"{secret['Name']} set twice on {task}"
        out[secret["Name"]] = secret["ValueFrom"]
    return out


def test_real_template_validates() -> None:
    findings = validate(TEMPLATE_PATH)
    assert errors_in(findings) == []


def test_cli_exits_zero_on_real_template() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "infra.validate"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "0 error(s)" in run.stderr


def _broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur once to make a targeted break"
    path = tmp_path / "template.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_mistyped_ref_in_environment_fails(tmp_path: Path) -> None:
    # plain cfn-lint on the SAM source misses this one (setup-notes.md)
    path = _broken_copy(tmp_path, "PINECONE_INDEX: !Ref PineconeIndex", "PINECONE_INDEX: !Ref PineconeIndexx")
    errors = errors_in(validate(path))
    assert errors, "a Ref to an unknown name must fail"
    assert any("PineconeIndexx" in e.message for e in errors)


def test_bad_runtime_in_globals_fails(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, "Runtime: python3.11", "Runtime: python3.99")
    errors = errors_in(validate(path))
    assert any("python3.99" in e.message for e in errors)


def test_sam_level_error_fails(tmp_path: Path) -> None:
    # an HttpApi event pointing at an API that does not exist is a transform error
    path = _broken_copy(tmp_path, "ApiId: !Ref HttpApi\n", "ApiId: !Ref NoSuchApi\n")
    errors = errors_in(validate(path))
    assert errors
    assert all(e.rule == "sam-transform" for e in errors)


def test_cli_exits_nonzero_on_broken_copy(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, "Runtime: python3.11", "Runtime: python3.99")
    run = subprocess.run(
        [sys.executable, "-m", "infra.validate", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "python3.99" in run.stderr


def test_lambda_env_has_every_production_setting(template: dict[str, Any]) -> None:
    expected = setting_names() - LOCAL_ONLY - ORDERBOOK_ONLY - RUNNER_ONLY
    missing = expected - set(lambda_env(template))
    assert not missing, f"settings missing from the Lambda environment: {sorted(missing)}"
    assert lambda_env(template)["APP_ENV"] == "production"


def test_lambda_env_names_are_known_settings(template: dict[str, Any]) -> None:
    # a typo in a name would silently leave the default in force
    extra = set(lambda_env(template)) - setting_names() - {"SECRETS_REVISION"}
    assert not extra, f"Lambda env names that no setting reads: {sorted(extra)}"


def test_orderbook_task_has_orderbook_settings(template: dict[str, Any]) -> None:
    env = container_env_names(template, "OrderbookTaskDefinition")
    missing = (ORDERBOOK_ONLY | PRODUCTION_REQUIRED | {"OBJECT_STORE_URL"}) - set(env)
    assert not missing, f"missing on the orderbook task: {sorted(missing)}"
    assert env["APP_ENV"] == "production"
    assert env["WAL_DIR"].startswith("/data")
    assert set(env) - setting_names() <= {"SECRETS_REVISION"}


def test_runner_task_has_runner_settings(template: dict[str, Any]) -> None:
    env = container_env_names(template, "RunnerTaskDefinition")
    missing = (RUNNER_ONLY | PRODUCTION_REQUIRED | {"OBJECT_STORE_URL", "PLAYWRIGHT_RUNNER_URL"}) - set(env)
    assert not missing, f"missing on the runner task: {sorted(missing)}"
    assert env["APP_ENV"] == "production"
    assert set(env) - setting_names() <= {"SECRETS_REVISION"}


def test_wal_is_on_efs_mounted_at_data(template: dict[str, Any]) -> None:
    props = template["Resources"]["OrderbookTaskDefinition"]["Properties"]
    volumes = {v["Name"]: v for v in props["Volumes"]}
    (mount,) = props["ContainerDefinitions"][0]["MountPoints"]
    assert mount["ContainerPath"] == "/data"
    efs = volumes[mount["SourceVolume"]]["EFSVolumeConfiguration"]
    assert efs["FilesystemId"] == {"Ref": "WalFileSystem"}
    assert efs["TransitEncryption"] == "ENABLED"
    assert template["Resources"]["WalFileSystem"]["DeletionPolicy"] == "Retain"


def test_orderbook_shard_never_runs_two_writers(template: dict[str, Any]) -> None:
    props = template["Resources"]["OrderbookService"]["Properties"]
    assert props["DesiredCount"] == 1
    assert props["DeploymentConfiguration"]["MaximumPercent"] == 100


def test_bucket_is_private_versioned_encrypted(template: dict[str, Any]) -> None:
    props = template["Resources"]["ObjectBucket"]["Properties"]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4


def test_secrets_are_not_literal_values(template: dict[str, Any]) -> None:
    env = lambda_env(template)
    for name in ("DATABASE_URL", "HMAC_KEYS", "AUDIT_HMAC_KEY", "JWT_SECRET"):
        assert "{{resolve:secretsmanager:" in str(env[name]), name


# ---------------------------------------------------------------- routes


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the functions app serves, docs pages included; HEAD
    and OPTIONS are answered by API Gateway / Starlette beside GET and are not routes."""
    from fastapi.routing import iter_route_contexts

    from functions.app import create_app

    app = create_app(Settings(APP_ENV="test"))
    try:
        routes: set[tuple[str, str]] = set()
        for ctx in iter_route_contexts(app.routes):
            path = ctx.path_format
            assert path is not None
            # API Gateway's `{name}` matches one segment; a Starlette `{name:path}` would need
            # a greedy `{name+}` at the end, which this check does not translate.
            assert ":" not in str(getattr(ctx, "path", "")), f"converter in {ctx.path}"
            for method in set(ctx.methods or ()) - {"HEAD", "OPTIONS"}:
                routes.add((method, path))
        return routes
    finally:
        app.state.orderbook.close()
        app.state.resources.close()


def template_routes(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(METHOD, path) → event name of every explicit HttpApi event of the function."""
    events = template["Resources"]["FunctionsApi"]["Properties"]["Events"]
    out: dict[tuple[str, str], str] = {}
    for name, event in events.items():
        assert event["Type"] == "HttpApi", name
        props = event["Properties"]
        assert props["ApiId"] == {"Ref": "HttpApi"}, name
        key = (props["Method"].upper(), props["Path"])
        assert key not in out, f"{key} in both {out.get(key)} and {name}"
        out[key] = name
    return out


def test_every_route_is_an_event_and_every_event_a_route(template: dict[str, Any]) -> None:
    events = template_routes(template)
    # The catch-all only gets unknown paths and methods (answered problem+json 404/405).
    assert events.pop(("ANY", "/{proxy+}")) == "Proxy"
    routes = app_routes()
    missing = sorted(routes - set(events))
    stale = sorted((method, path, events[(method, path)]) for method, path in set(events) - routes)
    hint = "\n".join(
        f"        <Name>:\n          Type: HttpApi\n"
        f'          Properties: {{ApiId: !Ref HttpApi, Path: "{path}", Method: {method}}}'
        for method, path in missing
    )
    assert not missing, f"routes without an event in infra/template.yaml; add:\n{hint}"
    assert not stale, f"events for routes the app does not have: {stale}"
    assert ("POST", "/api/v1/order") in routes and ("GET", "/api/v1/market/{symbol}/snapshot") in routes

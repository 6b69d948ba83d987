"""The `housing-mlops` command line. Every flag has an environment-variable twin (containers set env)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import click

from .errors import GateRejected, HousingError
from .limits import Settings as ServeSettings  # the serve options' defaults (no heavy imports)

log = logging.getLogger("housing_mlops")

DEFAULT_MODEL = "housing-model"


class Command(click.Command):
    """A command that, under `--validate-only`, prints its parsed options instead of running."""

    def invoke(self, ctx: click.Context):
        if ctx.find_root().params.get("validate_only"):
            click.echo(
                json.dumps({"command": ctx.command_path, "params": ctx.params}, default=str, sort_keys=True)
            )
            return None
        return super().invoke(ctx)


class Group(click.Group):
    command_class = Command


Group.group_class = Group


def tracking_option(f):
    return click.option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI", required=True, help="MLflow tracking server URL."
    )(f)


def model_option(f):
    return click.option(
        "--model-name",
        envvar="HOUSING_MODEL_NAME",
        default=DEFAULT_MODEL,
        show_default=True,
        help="Registered model.",
    )(f)


def alias_option(f):
    return click.option("--alias", envvar="HOUSING_ALIAS", default="production", show_default=True)(f)


def wait_option(default: float):
    return click.option(
        "--wait-timeout",
        envvar="HOUSING_WAIT_TIMEOUT",
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        help="Seconds to wait (with backoff) for services / the alias before giving up.",
    )


identity_option = click.option(
    "--identity",
    envvar="HOUSING_IDENTITY",
    help="Training identity (the chart's hash of data, params, image): train reuses a version that has it; "
    "promote judges it.",
)


def release_options(f):
    f = click.option(
        "--helm-record",
        is_flag=True,
        envvar="HOUSING_HELM_RECORD",
        help="Read Helm's record of the revision (in a pod: its Secret): the install it belongs to, and whether "
        "Helm still deploys it (a hook whose revision Helm gave up on applies nothing, exit 5).",
    )(f)
    f = click.option(
        "--install-id",
        envvar="HOUSING_INSTALL_ID",
        help="Which install of the release (records are kept per install); default with --helm-record: Helm's.",
    )(f)
    f = click.option(
        "--revision",
        envvar="HOUSING_REVISION",
        type=click.IntRange(min=1),
        help="Helm revision: promote records what it serves, rollback restores it.",
    )(f)
    return click.option("--release", envvar="HOUSING_RELEASE", help="Helm release as <namespace>/<name>.")(f)


def isvc_options(f):
    f = click.option(
        "--isvc-namespace", envvar="HOUSING_ISVC_NAMESPACE", help="Default: the pod's namespace."
    )(f)
    return click.option(
        "--isvc-name",
        envvar="HOUSING_ISVC_NAME",
        help="InferenceService the reconciler pins: wait until it is pinned to the version decided.",
    )(f)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--validate-only", is_flag=True, envvar="HOUSING_VALIDATE_ONLY", help="Parse, print options, exit."
)
@click.option("-v", "--verbose", is_flag=True, envvar="HOUSING_VERBOSE")
@click.version_option(package_name="housing-mlops")
def cli(validate_only: bool, verbose: bool) -> None:
    """From versioned data to a promoted, served model: the jobs of the housing-mlops chart."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # unreadable in kubectl logs
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,  # one configuration per invocation (tests run many in one process)
    )
    for noisy in ("urllib3", "botocore", "mlflow", "alembic", "git", "dvc", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
@tracking_option
@model_option
@click.option("--experiment", envvar="HOUSING_EXPERIMENT", default="housing")
@click.option(
    "--repo",
    envvar="HOUSING_DVC_REPO",
    type=click.Path(path_type=Path),
    default=Path("."),
    help="Folder with .dvc/config and the .dvc files.",
)
@click.option("--git-url", envvar="HOUSING_GIT_URL", help="Clone this repository instead of using --repo.")
@click.option(
    "--git-rev", envvar="HOUSING_GIT_REV", help="Branch or tag to clone / record as the code revision."
)
@click.option("--data", "target", envvar="HOUSING_DATA", default="data/housing.csv", help="DVC-tracked file.")
@click.option("--dvc-remote-url", envvar="HOUSING_DVC_REMOTE_URL", help="Override the DVC remote URL.")
@click.option(
    "--data-md5",
    envvar="HOUSING_DATA_MD5",
    help="Pull this version of --data (an md5 `data push` printed, or `latest`: the one pushed last) instead "
    "of the one its .dvc file records.",
)
@click.option(
    "--no-pull",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="HOUSING_NO_PULL",
    help="Train on this local CSV instead of dvc pull (experiments only; recorded as such).",
)
@click.option("--trigger", envvar="HOUSING_TRIGGER", default="manual", help="What started this run (tag).")
@click.option("--test-size", envvar="HOUSING_TEST_SIZE", type=click.FloatRange(0.05, 0.5), default=0.2)
@click.option("--random-state", envvar="HOUSING_RANDOM_STATE", type=int, default=42)
@click.option("--max-iter", envvar="HOUSING_MAX_ITER", type=click.IntRange(min=1), default=200)
@click.option(
    "--learning-rate", envvar="HOUSING_LEARNING_RATE", type=click.FloatRange(0, 1, min_open=True), default=0.1
)
@click.option(
    "--max-depth", envvar="HOUSING_MAX_DEPTH", type=click.IntRange(min=0), default=8, help="0 = unlimited."
)
@wait_option(120)
@identity_option
def train(
    tracking_uri,
    model_name,
    experiment,
    repo,
    git_url,
    git_rev,
    target,
    dvc_remote_url,
    data_md5,
    no_pull,
    trigger,
    test_size,
    random_state,
    max_iter,
    learning_rate,
    max_depth,
    wait_timeout,
    identity,
) -> None:
    """dvc pull the dataset, fit, log the run and register a model version (or reuse --identity's)."""
    from . import lifecycle
    from .data import check_md5
    from .train import TrainParams
    from .train import train as run

    params = TrainParams(test_size, random_state, max_iter, learning_rate, max_depth or None)
    result = run(
        tracking_uri=tracking_uri,
        model_name=model_name,
        experiment=experiment,
        repo=repo,
        target=target,
        remote_url=dvc_remote_url,
        git_url=git_url,
        git_rev=git_rev,
        trigger=trigger,
        params=params,
        wait_timeout=wait_timeout,
        local_csv=no_pull,
        identity=lifecycle.check_identity(identity),
        data_md5=data_md5 if data_md5 == "latest" else check_md5(data_md5),
    )
    click.echo(f"run_id={result.run_id} version={result.version} rmse={result.metrics['rmse']:.0f}")


@cli.command()
@tracking_option
@model_option
@alias_option
@click.option("--version", envvar="HOUSING_MODEL_VERSION", help="Candidate version (default: latest).")
@click.option(
    "--trigger",
    envvar="HOUSING_TRIGGER",
    help="Candidate = the version whose trigger tag matches (when no --identity is given).",
)
@click.option("--metric", envvar="HOUSING_GATE_METRIC", default="rmse")
@click.option(
    "--direction",
    envvar="HOUSING_GATE_DIRECTION",
    type=click.Choice(["minimize", "maximize"]),
    default="minimize",
)
@click.option(
    "--max-regression-pct",
    envvar="HOUSING_GATE_MAX_REGRESSION_PCT",
    type=click.FloatRange(min=0),
    default=0.0,
    help="How much worse than the champion the candidate may be, in %.",
)
@click.option(
    "--threshold", envvar="HOUSING_GATE_THRESHOLD", type=float, help="Absolute bound on the metric."
)
@click.option(
    "--allow-older-data",
    is_flag=True,
    envvar="HOUSING_GATE_ALLOW_OLDER_DATA",
    help="Judge a candidate trained on an older dataset than the champion's (rejected otherwise).",
)
@click.option(
    "--bootstrap",
    is_flag=True,
    envvar="HOUSING_BOOTSTRAP",
    help="Only while the alias does not exist yet (a release's first model); otherwise do nothing.",
)
@wait_option(120)
@isvc_options
@identity_option
@release_options
@click.option(
    "--training-job",
    envvar="HOUSING_TRAINING_JOB",
    help="Kubernetes Job training the candidate: its failure ends the wait at once.",
)
@click.option(
    "--moved-by",
    envvar="HOUSING_MOVED_BY",
    help="Who this promotion acts for, recorded when it moves the alias (default: the release revision, else "
    "the trigger).",
)
def promote(
    tracking_uri,
    model_name,
    alias,
    version,
    trigger,
    metric,
    direction,
    max_regression_pct,
    threshold,
    allow_older_data,
    bootstrap,
    wait_timeout,
    isvc_name,
    isvc_namespace,
    identity,
    release,
    revision,
    install_id,
    helm_record,
    training_job,
    moved_by,
) -> None:
    """Quality gate, then move the alias (exit 0 promoted or kept, 3 rejected, 4 its training failed, 5 Helm gave
    up on the revision, 1 error). With --release/--revision (the hook), lifecycle.py decides whether this
    revision changes the model at all."""
    from . import lifecycle, registry
    from .promote import Gate
    from .promote import promote as run

    if version and (trigger or identity):
        raise click.UsageError("give --version, or --identity / --trigger, not both")
    if identity:
        trigger = None  # the identity names the candidate; the trigger is the fallback without one
    if release and not identity:
        raise click.UsageError(
            "--release needs --identity (HOUSING_IDENTITY): the revision's training identity"
        )
    lifecycle.check_identity(identity)
    gate = Gate(metric, direction, max_regression_pct, threshold, allow_older_data)
    at, guard = _revision(release, revision, install_id, helm_record, deploying=True)
    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    if bootstrap and not lifecycle.bootstrap_needed(model_name, alias):
        click.echo(f"skipped: {model_name}@{alias} exists; the promotion hook decides")
        return
    job_failure = None
    if training_job:
        from . import kube

        def job_failure() -> str | None:
            return kube.job_failure(training_job, isvc_namespace)

    by = moved_by or (
        f"helm:{at.namespace}/{at.release}@{at.revision}" if at else f"trigger:{trigger or 'cli'}"
    )
    if at is None:
        outcome, promoted = run(
            name=model_name, alias=alias, version=version, trigger=trigger, gate=gate,
            wait_timeout=wait_timeout, identity=identity, job_failure=job_failure, by=by,
        )  # fmt: skip
    else:
        outcome, promoted = lifecycle.promote_revision(
            name=model_name, alias=alias, at=at, identity=identity, wait_timeout=wait_timeout,
            job_failure=job_failure, guard=guard,
            settle=(lambda v: lifecycle.wait_pinned(isvc_name, isvc_namespace, v, PIN_WAIT_S)) if isvc_name else None,
            promote=lambda candidate: run(
                name=model_name, alias=alias, version=candidate, trigger=None, gate=gate,
                wait_timeout=wait_timeout, by=by, guard=guard,
            ),
        )  # fmt: skip
    if at is None and promoted is not None and isvc_name:
        lifecycle.wait_pinned(isvc_name, isvc_namespace, promoted, PIN_WAIT_S)
    click.echo(f"{outcome}: {model_name} version {promoted} is @{alias}")


PIN_WAIT_S = 120.0  # the reconciler pins within seconds; this bounds a hook whose reconciler is down


def _revision(release, revision, install_id, helm_record, *, deploying: bool):
    """The Helm revision a hook acts for (None without --release) and its guard: with --helm-record, Helm's own
    record of the revision gives the install and (``deploying``) must say Helm is still deploying it."""
    from . import kube, lifecycle
    from .errors import Superseded

    if (release is None) != (revision is None):
        raise click.UsageError("--release and --revision go together")
    if release is None:
        return None, None
    lifecycle.check_release(release)  # before anything moves: a bad value must not fail after the alias moved
    if install_id is None and not helm_record:
        raise click.UsageError("--release needs --install-id or --helm-record (which install of the release)")
    guard = None
    if helm_record:
        ns, name = release.split("/")
        found = kube.helm_record(ns, name, revision)
        if found is None:
            raise Superseded(f"Helm has no record of revision {revision} of {release} that this hook may read: "
                             "the release was uninstalled or rolled back; nothing is applied")  # fmt: skip
        install_id = found.install
        if deploying:
            guard = lifecycle.helm_guard(ns, name, revision, install_id)
            guard()
    return lifecycle.Revision.parse(release, revision, install_id), guard


@cli.command()
@tracking_option
@model_option
@alias_option
@wait_option(60)
@isvc_options
@identity_option
@release_options
def rollback(
    tracking_uri,
    model_name,
    alias,
    wait_timeout,
    isvc_name,
    isvc_namespace,
    identity,
    release,
    revision,
    install_id,
    helm_record,
) -> None:
    """Put the alias back on the previous champion; with --release/--revision (the post-rollback hook), on the
    version that revision served (exit 6, nothing changed, when that version is gone)."""
    from . import lifecycle, registry
    from .promote import restore
    from .promote import rollback as run

    lifecycle.check_identity(identity)
    at, _ = _revision(release, revision, install_id, helm_record, deploying=False)
    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    if at is None:
        old, new = run(name=model_name, alias=alias, wait_timeout=wait_timeout)
        if isvc_name:
            lifecycle.wait_pinned(isvc_name, isvc_namespace, new, PIN_WAIT_S)
        click.echo(f"rolled back: {model_name}@{alias} version {old} -> {new}")
        return
    target = lifecycle.rollback_target(model_name, alias, at, revision, identity)
    if target is None:
        current = lifecycle.holder(model_name, alias)
        click.echo(
            f"kept: no record of what revision {revision} of {release} served; @{alias} stays {current}"
        )
        return
    lifecycle.check_restorable(
        model_name, target, f"revision {revision} of {release} served version {target}"
    )
    old, new = restore(name=model_name, alias=alias, version=target, wait_timeout=wait_timeout,
                       by=f"helm-rollback:{release}@{revision}")  # fmt: skip
    lifecycle.record(model_name, at, new, identity)
    if isvc_name:
        lifecycle.wait_pinned(isvc_name, isvc_namespace, new, PIN_WAIT_S)
    click.echo(f"rolled back to revision {revision}: {model_name}@{alias} version {old} -> {new}")


@cli.command()
@tracking_option
@model_option
@alias_option
@wait_option(60)
@isvc_options
@click.option(
    "--uri-prefix",
    envvar="HOUSING_URI_PREFIX",
    required=True,
    help="The release's MLflow as its storage container matches it: mlflow://<host:port>/ (the InferenceService's "
    "storageUri must be <prefix><model>/pinned).",
)
@click.option(
    "--interval",
    envvar="HOUSING_RECONCILE_INTERVAL",
    type=click.FloatRange(min=0.5),
    help="Run for ever, a round every INTERVAL seconds (the reconciler Deployment); default: one round.",
)
@click.option("--health-port", envvar="HOUSING_HEALTH_PORT", type=click.IntRange(0, 65535), default=8081)
def reconcile(
    tracking_uri,
    model_name,
    alias,
    wait_timeout,
    isvc_name,
    isvc_namespace,
    uri_prefix,
    interval,
    health_port,
) -> None:
    """Pin the InferenceService to the version the alias holds (an exact version, in its
    housing-mlops.io/model-version annotation: every replica, and every pod created later, fetches it), once or for
    ever."""
    from . import lifecycle, reconciler, registry
    from .errors import ConfigError

    if not isvc_name:
        raise click.UsageError("--isvc-name (HOUSING_ISVC_NAME) is required")
    if not uri_prefix.startswith("mlflow://") or not uri_prefix.endswith("/"):
        raise ConfigError(
            f"--uri-prefix (HOUSING_URI_PREFIX) must look like mlflow://<host:port>/, got {uri_prefix!r}"
        )
    registry.check_http_url(tracking_uri, "MLflow URL (--tracking-uri, MLFLOW_TRACKING_URI)")

    def round_() -> str:
        return lifecycle.reconcile_once(model_name, alias, isvc_name, isvc_namespace, uri_prefix)

    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    if interval is None:
        click.echo(round_())
        return
    health = reconciler.Health(stale_after=3 * interval + 10)
    health.serve(health_port)
    log.info("reconciling %s@%s -> InferenceService %s every %gs", model_name, alias, isvc_name, interval)
    reconciler.run(round_, interval, health)


@cli.command()
@tracking_option
@model_option
@click.option("--alias", envvar="HOUSING_ALIAS", help="e.g. production")
@click.option("--version", envvar="HOUSING_MODEL_VERSION")
@wait_option(30)
def resolve(tracking_uri, model_name, alias, version, wait_timeout) -> None:
    """Print the physical s3:// URI of an alias or version (only the URI, on stdout)."""
    from . import registry
    from .resolve import resolve as run

    if bool(alias) == bool(version):
        raise click.UsageError("give exactly one of --alias or --version")
    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    found, uri = run(model_name, alias, version)
    log.info("%s %s -> version %s", model_name, f"@{alias}" if alias else f"v{version}", found)
    click.echo(uri)


@cli.command("fetch-model")
@click.argument("uri")
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default="", help="Needed for mlflow:// URIs.")
@wait_option(600)
@click.option(
    "--pinned-version",
    envvar="HOUSING_PINNED_VERSION",
    help="The version a mlflow://…/<model>/pinned URI stands for (the chart: the predictor pod's pin annotation).",
)
@click.option(
    "--artifact-root",
    envvar="HOUSING_ARTIFACT_ROOT",
    default="",
    help="s3://<bucket>[/<prefix>] the MLflow server stores artifacts under (required): any model URI outside it "
    "is refused.",
)
@click.option(
    "--allow-unverified",
    is_flag=True,
    envvar="HOUSING_ALLOW_UNVERIFIED",
    help="Also fetch a model without a record of its files' sha256 (older versions, s3:// URIs), with a warning. "
    "A recorded model that does not match is refused all the same.",
)
def fetch_model(
    uri, dest, tracking_uri, wait_timeout, pinned_version, artifact_root, allow_unverified
) -> None:
    """Download a model folder (MLmodel at DEST's root), verified: KServe's storage-initializer contract."""
    from .fetch import fetch

    s3_uri, _version = fetch(
        uri,
        dest,
        tracking_uri,
        wait_timeout,
        pinned_version,
        artifact_root=artifact_root,
        allow_unverified=allow_unverified,
    )
    click.echo(f"fetched {uri} -> {s3_uri} -> {dest}")


@cli.command()
@click.option("--url", envvar="HOUSING_INFER_URL", required=True, help="Base URL of the V2 server.")
@model_option
@click.option("--min-price", envvar="HOUSING_MIN_PRICE", type=float, default=14_999.0)
@click.option("--max-price", envvar="HOUSING_MAX_PRICE", type=float, default=1_000_000.0)
@click.option("--timeout", envvar="HOUSING_TIMEOUT", type=click.FloatRange(min=0.1), default=30.0)
@wait_option(60)
@click.option(
    "--expect-alias",
    envvar="HOUSING_EXPECT_ALIAS",
    help="Also fail unless the answer's model_version is this alias's version (asks MLflow).",
)
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default="", help="For --expect-alias.")
@click.option(
    "--binary/--no-binary",
    envvar="HOUSING_INFER_BINARY",
    default=True,
    help="Also send the request as binary tensors (off for a server without the binary extension, e.g. MLServer).",
)
@click.option(
    "--grpc",
    "grpc_address",
    envvar="HOUSING_GRPC_ADDRESS",
    default="",
    help="Also send it over V2 gRPC to HOST:PORT; fail unless the price and version equal the REST answer's.",
)
def infer(
    url,
    model_name,
    min_price,
    max_price,
    timeout,
    wait_timeout,
    expect_alias,
    tracking_uri,
    binary,
    grpc_address,
) -> None:
    """Send the canonical V2 request (JSON, then binary tensors); fail unless both answer the same sane price
    (from the alias's version)."""
    from . import registry
    from .errors import HousingError
    from .infer import infer as run
    from .infer import infer_binary, infer_grpc, pretty, wait_ready

    registry.check_http_url(url, "V2 server URL (--url, HOUSING_INFER_URL)")
    wait_ready(url, model_name, wait_timeout)
    price, body = run(url, model_name, min_price, max_price, timeout)
    click.echo(pretty(body))
    click.echo(f"price: {price:,.0f}")
    if binary:
        binary_price = infer_binary(url, model_name, timeout)
        if binary_price != price:
            raise HousingError(f"the binary tensor request answered {binary_price!r}, JSON {price!r}")
        click.echo("binary tensors (request and answer): the same price")
    if grpc_address:
        grpc_price, grpc_version = infer_grpc(grpc_address, model_name, timeout)
        if (grpc_price, grpc_version) != (price, body.get("model_version")):
            raise HousingError(
                f"gRPC {grpc_address} answered {grpc_price!r} from version {grpc_version!r}, REST {price!r} "
                f"from version {body.get('model_version')!r}"
            )
        click.echo(f"gRPC {grpc_address}: the same price from the same version")
    if expect_alias:
        registry.wait_for_mlflow(tracking_uri, wait_timeout)
        wanted = str(registry.get_version(model_name, alias=expect_alias).version)
        served = body.get("model_version")
        if served != wanted:
            raise HousingError(
                f"the answer came from model version {served!r}, but {model_name}@{expect_alias} is version {wanted}"
            )
        click.echo(f"model_version: {served} (= {model_name}@{expect_alias})")


@cli.command()
@tracking_option
@model_option
@alias_option
@wait_option(60)
def check(tracking_uri, model_name, alias, wait_timeout) -> None:
    """MLflow is healthy and the alias exists."""
    from .infer import check as run

    click.echo(run(tracking_uri, model_name, alias, wait_timeout))


@cli.command("predict-batch")
@click.argument("csv", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", required=True)
@click.option("--model-uri", envvar="HOUSING_MODEL_URI", default=f"models:/{DEFAULT_MODEL}@production")
@click.option(
    "--out", envvar="HOUSING_OUT", type=click.Path(path_type=Path, dir_okay=False), help="Default: stdout."
)
@wait_option(60)
def predict_batch(csv, tracking_uri, model_uri, out, wait_timeout) -> None:
    """Predict every row of CSV; write JSON."""
    from . import registry
    from .batch import predict_batch as run
    from .batch import write_json
    from .errors import ConfigError

    if out is not None and not out.parent.is_dir():  # before the work, not after
        raise ConfigError(f"--out {out} (HOUSING_OUT): folder {out.parent} does not exist")
    registry.wait_for_mlflow(tracking_uri, wait_timeout)
    rows = run(csv, model_uri)
    write_json(rows, out)
    log.info("predicted %d rows with %s", len(rows), model_uri)


@cli.group(cls=Group)
def data() -> None:
    """The DVC-tracked dataset."""


@data.command("push")
@click.argument("path", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--repo", envvar="HOUSING_DVC_REPO", type=click.Path(path_type=Path), default=Path("."))
@click.option("--dvc-remote-url", envvar="HOUSING_DVC_REMOTE_URL")
@click.option(
    "--no-synthetic", is_flag=True, envvar="HOUSING_NO_SYNTHETIC", help="Fail instead of generating."
)
@click.option(
    "--target",
    envvar="HOUSING_DATA",
    default="data/housing.csv",
    help="DVC-tracked path the CSV becomes (its .dvc file is written when the md5 is new).",
)
def data_push(path, repo, dvc_remote_url, no_synthetic, target) -> None:
    """Version a dataset (dvc add + push): PATH, else $HOUSING_CSV, else the public source, else synthetic data.

    Any schema-valid CSV is a new version: commit the .dvc file it writes, or pin the md5 it prints
    (`train --data-md5`, the chart's `training.data.md5`)."""
    from .data import push

    target, md5 = push(repo, path, dvc_remote_url, allow_synthetic=not no_synthetic, target=target)
    click.echo(f"target={target} md5={md5}")


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--model-name",
    envvar="HOUSING_SERVE_MODEL_NAME",
    default=DEFAULT_MODEL,
    show_default=True,
    help="The V2 model name it answers to (the chart: the InferenceService's name).",
)
@click.option(
    "--host",
    envvar="HOUSING_SERVE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (the chart's runtime: 0.0.0.0).",
)
@click.option("--http-port", envvar="HOUSING_SERVE_HTTP_PORT", type=int, default=8080, show_default=True)
@click.option(
    "--grpc-port",
    envvar="HOUSING_SERVE_GRPC_PORT",
    type=int,
    default=8081,
    show_default=True,
    help="V2 gRPC; 0: off.",
)
@click.option(
    "--metrics-port",
    envvar="HOUSING_SERVE_METRICS_PORT",
    type=int,
    default=8082,
    show_default=True,
    help="Prometheus /metrics; 0: off.",
)
@click.option(
    "--max-body-bytes",
    envvar="HOUSING_SERVE_MAX_BODY_BYTES",
    type=click.IntRange(min=1),
    default=ServeSettings.max_body_bytes,
    show_default=True,
    help="Largest request body (a gzip body: inflated) and gRPC message; larger: 413 / RESOURCE_EXHAUSTED.",
)
@click.option(
    "--max-rows",
    envvar="HOUSING_SERVE_MAX_ROWS",
    type=click.IntRange(min=1),
    default=ServeSettings.max_rows,
    show_default=True,
    help="Most rows in one request; more: 413 / INVALID_ARGUMENT.",
)
@click.option(
    "--max-elements",
    envvar="HOUSING_SERVE_MAX_ELEMENTS",
    type=click.IntRange(min=1),
    default=ServeSettings.max_elements,
    show_default=True,
    help="Most values over all inputs of one request.",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    envvar="HOUSING_SERVE_TIMEOUT_SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    default=ServeSettings.timeout_seconds,
    show_default=True,
    help="Seconds a request may wait for its answer; longer: 504 / DEADLINE_EXCEEDED.",
)
@click.option(
    "--workers",
    envvar="HOUSING_SERVE_WORKERS",
    type=click.IntRange(min=1),
    default=ServeSettings.workers,
    show_default=True,
    help="Inference threads (requests are parsed and predicted off the event loop).",
)
@click.option(
    "--load-later",
    envvar="HOUSING_SERVE_LOAD_LATER",
    is_flag=True,
    help="Start without the model (MODEL_DIR may not exist yet); it loads on SIGHUP. The demo starts the "
    "server so while it trains.",
)
def serve(model_dir, model_name, host, http_port, grpc_port, metrics_port, max_body_bytes, max_rows,
          max_elements, timeout_seconds, workers, load_later) -> None:  # fmt: skip
    """Run the V2 model server on MODEL_DIR as KServe's ServingRuntime does (foreground)."""
    from .serve import argv, serving_env

    settings = ServeSettings(
        model_dir=model_dir, model_name=model_name, host=host, http_port=http_port, grpc_port=grpc_port,
        metrics_port=metrics_port, max_body_bytes=max_body_bytes, max_rows=max_rows, max_elements=max_elements,
        timeout_seconds=timeout_seconds, workers=workers, load_later=load_later,
    )  # fmt: skip
    command = argv(model_dir, check=not load_later)
    os.execve(command[0], command, {**os.environ, **serving_env(settings.to_env())})


@cli.group(cls=Group)
def local() -> None:
    """The local stack: embedded PostgreSQL, S3-compatible server, MLflow (state in .local/)."""


@local.command("up")
def local_up() -> None:
    """Start what is not running (idempotent); print the jobs' environment (secrets: the file that holds them)."""
    from .local import LocalConfig, printable_env, up

    cfg = LocalConfig.from_env()
    click.echo(printable_env(cfg, up(cfg)), nl=False)


@local.command("down")
def local_down() -> None:
    """Stop only what `up` (or the demo) started; data stay in the state folder."""
    from .local import LocalConfig, down

    stopped = down(LocalConfig.from_env())
    click.echo(f"stopped: {', '.join(stopped) or 'nothing'}")


@local.command("destroy")
@click.option(
    "--yes", is_flag=True, envvar="HOUSING_LOCAL_DESTROY", help="Really delete the runs, models and data."
)
def local_destroy(yes: bool) -> None:
    """Stop the stack, delete what it keeps (database, S3 objects, secrets, logs) and, as root, PostgreSQL's OS
    user."""
    from .errors import ConfigError
    from .local import LocalConfig, destroy

    cfg = LocalConfig.from_env()
    if not yes:
        raise ConfigError(
            f"this deletes every run, model and object of the stack in {cfg.state_dir}: add --yes"
        )
    removed = destroy(cfg)
    click.echo(f"removed: {', '.join(removed) or 'nothing'}")


@local.command("status")
def local_status() -> None:
    """Which services answer."""
    from .local import LocalConfig, status

    report = status(LocalConfig.from_env())
    for name, state in report.items():
        click.echo(f"{name:<11} {state}")
    if any(s.startswith("down") for s in report.values()):
        sys.exit(1)


def _usage_line(exc: click.UsageError) -> str:
    """A usage error as one line, naming the environment variable when the bad value came from one."""
    message = exc.format_message()
    param, ctx = getattr(exc, "param", None), exc.ctx
    if isinstance(exc, click.BadParameter) and param is not None and param.name and ctx is not None:
        from click.core import ParameterSource

        envvar = param.envvar if isinstance(param.envvar, str) else None
        if envvar and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
            message = f"{envvar} (for {param.get_error_hint(ctx)}): {exc.message}"
    where = ctx.command_path if ctx is not None else "housing-mlops"
    return f"{' '.join(message.split())} (see `{where} --help`)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: every failure is one line on stderr and a distinct exit code; a failure we did not foresee
    too (its traceback with --verbose / HOUSING_VERBOSE=1)."""
    try:
        cli.main(args=argv, prog_name="housing-mlops", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.UsageError as exc:
        click.echo(f"error: {_usage_line(exc)}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except GateRejected as exc:
        click.echo(f"rejected: {exc}", err=True)
        return exc.exit_code
    except HousingError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except subprocess.CalledProcessError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except OSError as exc:  # a file or folder we were pointed at: name it
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {' '.join(str(exc.strerror or exc).split())}{where}", err=True)
        return 1
    except Exception as exc:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            click.echo(f"error: MLflow: {' '.join(exc.message.split())}", err=True)
            return 1
        if isinstance(exc, (Boto3Error, BotoCoreError, ClientError)):
            click.echo(f"error: S3: {' '.join(str(exc).split())}", err=True)
            return 1
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        click.echo(
            f"error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(unexpected: HOUSING_VERBOSE=1 shows where)",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

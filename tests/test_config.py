"""Sweep config validation: every bad input fails before Ray starts, naming the field."""

import pathlib

import pytest
import yaml

from distillery.methods.errors import UserError
from distillery.orchestrator.config import load_config, validate_config
from distillery.orchestrator.grid import expand, trial_hash
from tests.sweep_helpers import cli, tiny_sweep, write_config


def test_valid_config_expands_with_stable_hashes(tmp_path):
    cfg = validate_config(tiny_sweep("ok", full_baseline={"enabled": True}), base_dir=tmp_path)
    plans = expand(cfg)
    assert len(plans) == 9  # 2 methods x 2 ipc x 2 seeds + 1 baseline
    assert [p.name for p in plans][:2] == ["random-ipc1-seed0", "random-ipc1-seed1"]
    assert plans[-1].name == "full-seed0" and plans[-1].full_data
    again = expand(validate_config(tiny_sweep("ok", full_baseline={"enabled": True}), base_dir=tmp_path))
    assert [p.trial_hash for p in plans] == [p.trial_hash for p in again]
    assert cfg.storage_path.startswith(str(tmp_path)) and cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_hash_changes_with_what_matters_only(tmp_path):
    base = expand(validate_config(tiny_sweep("h"), base_dir=tmp_path))[0]
    more_epochs = expand(validate_config(tiny_sweep("h", eval={"epochs": 5, "models": 2}), base_dir=tmp_path))[0]
    more_cpu = expand(validate_config(tiny_sweep("h", resources={"cpu": 2}), base_dir=tmp_path))[0]
    renamed = expand(validate_config(tiny_sweep("other-name"), base_dir=tmp_path))[0]
    vmap = expand(validate_config(tiny_sweep("h", eval={"epochs": 4, "models": 2, "vectorize": True, "arch_options": {"convnet": {"width": 8}}}), base_dir=tmp_path))[0]
    assert trial_hash(base.spec) != trial_hash(more_epochs.spec)
    assert vmap.spec.eval.vectorize is True and base.spec.eval.vectorize is None
    assert base.trial_hash == more_cpu.trial_hash == renamed.trial_hash == vmap.trial_hash  # how, not what


def test_per_method_ipcs_params_and_resource_overrides(tmp_path):
    raw = tiny_sweep("o")
    raw["methods"]["herding"]["ipcs"] = [2]
    raw["methods"]["herding"]["per_ipc"] = {2: {"embed_epochs": 2}}
    raw["resources"] = {"cpu": 1, "gpu": 0, "overrides": [{"method": "herding", "ipc": [2], "gpu": 0.25, "cpu": 0.5}]}
    plans = expand(validate_config(raw, base_dir=tmp_path))
    herding = [p for p in plans if p.spec.method == "herding"]
    assert {p.spec.ipc for p in herding} == {2}
    assert all(p.spec.resolved_method_config().embed_epochs == 2 for p in herding)
    assert all(p.resources.gpu == 0.25 and p.resources.cpu == 0.5 for p in herding)
    assert all(p.resources.gpu == 0 for p in plans if p.spec.method == "random")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"methods": {"nosuch": {}}}, "methods.nosuch: unknown method 'nosuch'"),
        ({"ipcs": [0, 1]}, "ipcs.0"),
        ({"resources": {"gpu": 1.5}}, "resources.gpu"),
        ({"methods": {"random": {"lr_img": 1}}}, "methods.random.lr_img: unknown field (method options go under params:)"),
        ({"methods": {"herding": {"params": {"lr": 1}}}}, "method 'herding' has no option 'lr'"),
        ({"datasets": ["nosuch"]}, "datasets[0].name: unknown dataset 'nosuch'"),
        ({"eval": {"archs": ["vgg"]}}, "eval.archs: unknown network 'vgg'"),
        ({"seeds": [1, 1]}, "seeds has duplicates"),
        ({"name": "bad name!"}, "name"),
        ({"full_baseline": {"enabled": True}, "resources": {"overrides": [{"method": "full", "ipc": [1], "gpu": 0.5}]}},
         "resources.overrides.ipc: the full-data baseline (full) has no IPC"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, change, expected):
    raw = {**tiny_sweep("bad"), **change}
    with pytest.raises(UserError) as err:
        validate_config(raw, base_dir=tmp_path)
    assert expected in str(err.value)


def test_set_overrides_and_missing_file(tmp_path):
    path = write_config(tmp_path, tiny_sweep("s"))
    cfg = load_config(path, {"eval.epochs": "7", "resources.gpu": "0.25", "datasets.0.subset_per_class": "20"}, base_dir=tmp_path)
    assert cfg.eval.epochs == 7 and cfg.resources.gpu == 0.25 and cfg.datasets[0].subset_per_class == 20
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"methods": {"nosuch": {}}}, "unknown method 'nosuch'"),
        ({"ipcs": [0]}, "ipcs.0"),
        ({"resources": {"gpu": 1.5}}, "resources.gpu"),
        ({"datasets": [{"name": "imagefolder", "root": "/nonexistent/data"}]}, "/nonexistent/data"),
        ({"ipcs": [500]}, "IPC 500 is more than dataset 'digits' has in its smallest class"),
    ],
)
def test_cli_exits_2_before_ray_starts(tmp_path, change, expected):
    path = write_config(tmp_path, {**tiny_sweep("bad"), **change})
    proc = cli(["sweep", str(path)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


def test_dry_run_prints_the_trial_table(tmp_path):
    path = write_config(tmp_path, tiny_sweep("dry"))
    proc = cli(["sweep", str(path), "--dry-run"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "herding-ipc2-seed1" in proc.stdout and "8 trials, 16 evaluation models" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------- everything checked at --dry-run
_DRY_RUN_CASES = [
    # (config changes, --set overrides, text the one error line must contain)
    ({}, ["datasets.5.root=/x"], "--set datasets.5.root: index 5 is out of range"),
    ({}, ["datasets.x.root=/x"], "'x' is not a list index"),
    ({}, ["eval.models=[1"], "--set eval.models=[1: not valid YAML"),
    ({}, ["eval..models=1"], "empty field name"),
    ({}, ["name.x=1"], "'name' is a value"),
    ({"datasets": 5}, [], "datasets: Input should be a valid list"),
    ({"datasets": [{"name": "imagefolder", "root": "/nonexistent/data"}]}, [], "--set datasets.0.root=PATH"),
    ({"datasets": [{"name": "mnist", "root": "/nonexistent/data"}]}, [], "datasets[0].download: true"),
    ({"ipcs": [1, 500]}, [], "ipcs: IPC 500 is more than dataset 'digits' has in its smallest class"),
    ({"datasets": [{"name": "digits", "subset_per_class": 1}]}, [], "(subset_per_class 1); use IPCs <= 1"),
    ({}, ["eval.dsa_strategy=color_bogus"], "eval.dsa_strategy: unknown DSA augmentation family 'bogus'"),
    ({}, ["eval.arch_options.convnet.bogus=1"], "eval.arch_options.convnet: network 'convnet'"),
    ({}, ["eval.arch_options.convnet.norm=bogus"], "unknown norm 'bogus'"),
    ({"methods": {"dm": {"params": {"dsa": 7}}}}, [], "option 'dsa' expects true or false, got 7"),
    ({"methods": {"dm": {"params": {"iterations": "many"}}}}, [], "option 'iterations' expects"),
    ({"methods": {"dm": {"per_ipc": {7: {"iterations": 5}}}}}, [], "methods.dm.per_ipc.7: IPC 7 is not in ipcs [1, 2]"),
    ({"name": ".."}, [], "'..' cannot be a folder name"),
    ({"name": ".hidden"}, [], "cannot be a folder name"),
    ({"storage_path": "s3://bucket/runs"}, [], "storage_path: 's3://bucket/runs' is a s3:// URI"),
    # the second hardening round: each used to pass --dry-run (or end in a traceback)
    ({"device": "cdua"}, [], "device 'cdua' is not one of auto, cpu, cuda, cuda:N, mps"),
    ({"device": "cuda"}, [], "device: 'cuda' but resources.gpu is 0"),
    ({}, ["resources.cpu=.inf"], "resources.cpu: Input should be a finite number"),
    ({}, ["resources.gpu=.inf"], "resources.gpu: Input should be a finite number"),
    ({"num_gpus": 0}, ["resources.gpu=1"], "no node of this machine (a local Ray instance) can hold trials asking for cpu 1, gpu 1"),
    ({}, ["resources.cpu=4096"], "can hold trials asking for cpu 4096, gpu 0"),
    ({}, ["resources.overrides=[{ipc: [7], cpu: 2}]"], "resources.overrides.0.ipc: IPC [7] matches no trial of the sweep"),
    ({}, ["eval.archs=[convnet, convnet]"], "archs has duplicates"),
    ({}, ["ipcs=[yes, 2]"], "ipcs.0: Input should be a valid integer"),
    ({"tracking_uri": "htp:/nowhere"}, [], "tracking_uri 'htp:/nowhere' is not an MLflow tracking store"),
    ({"methods": {"random": {}, "mtt": {"params": {"buffer_dir": "s3://bucket/x"}}}}, [],
     "methods.mtt.params.buffer_dir: 's3://bucket/x' is a s3:// URI"),
    ({"storage_path": "/proc/version/runs"}, [], "storage_path: /proc/version/runs cannot be a folder"),
    ({"datasets": [{"name": "mnist", "root": "s3://bucket/mnist", "download": True}]}, [], "root 's3://bucket/mnist' is a s3:// URI"),
    ({}, ["eval.arch_options.convnet.pooling=avgpoool"], "convnet option pooling must be one of avgpool, maxpool, none"),
    ({"methods": {"random": {"ipcs": [1, 1]}}}, [], "ipcs has duplicates: [1, 1]"),
    ({"full_baseline": {"enabled": True, "seeds": [0, 0]}}, [], "seeds has duplicates: [0, 0]"),
]


@pytest.mark.parametrize("change,sets,expected", _DRY_RUN_CASES, ids=[c[2][:40] for c in _DRY_RUN_CASES])
def test_dry_run_exits_2_naming_the_field(tmp_path, capsys, change, sets, expected):
    from distillery.orchestrator.cli import main

    path = write_config(tmp_path, {**tiny_sweep("bad"), **change})
    argv = ["sweep", str(path), "--dry-run", *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err and not (tmp_path / "distillery-runs").exists()


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep("dup")) + "seeds: [5]\n")
    with pytest.raises(UserError, match=r"key 'seeds' is written twice \(lines \d+ and \d+\)"):
        load_config(path, base_dir=tmp_path)


def test_file_uri_storage_path_and_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = validate_config(tiny_sweep("u", storage_path=f"file://{tmp_path}/runs"), base_dir=tmp_path)
    assert cfg.storage_path == str(tmp_path / "runs") and cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert validate_config(tiny_sweep("u"), base_dir=tmp_path).tracking_uri == "http://127.0.0.1:5999"  # env over default
    explicit = validate_config(tiny_sweep("u", tracking_uri="sqlite:///x.db"), base_dir=tmp_path)
    assert explicit.tracking_uri == f"sqlite:///{tmp_path / 'x.db'}"  # the config (or --tracking-uri) over env


def test_class_counts_come_from_file_names_without_decoding(tmp_path):
    """The IPC check on an ImageFolder tree counts files: an undecodable image does not matter."""
    from distillery.methods.data import DatasetOptions, train_class_counts

    for split, n in (("train", 3), ("test", 1)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n + (c == "b")):
                (tmp_path / split / c / f"{i}.png").write_bytes(b"not a png")
    assert train_class_counts("imagefolder", DatasetOptions(root=str(tmp_path))) == [3, 4]
    raw = {**tiny_sweep("cnt"), "datasets": [{"name": "imagefolder", "root": str(tmp_path)}], "ipcs": [4]}
    with pytest.raises(UserError, match=r"IPC 4 is more than dataset 'imagefolder' has in its smallest class \(3 training images\)"):
        validate_config(raw, base_dir=tmp_path)


@pytest.mark.parametrize("name", ["quickstart.yaml", "paper_fairness_cifar10.yaml"])
def test_each_cell_records_a_trial_command_that_reproduces_it(tmp_path, name):
    """`distillery trial` with the recorded command resolves to the sweep cell's identity (hash)."""
    import dataclasses
    import shlex

    from distillery.methods.data import resolve_options
    from distillery.orchestrator.cli import build_parser
    from distillery.orchestrator.trial_cmd import spec_from_args
    from tests.sweep_helpers import REPO

    plans = expand(load_config(REPO / "configs" / name, base_dir=tmp_path))
    for plan in plans[:: max(1, len(plans) // 12)] + [plans[-1]]:
        command = plan.tags()["distillery.trial_command"]
        argv = shlex.split(command)
        assert argv[:2] == ["distillery", "trial"]
        spec = spec_from_args(build_parser().parse_args(argv[1:]))
        spec = dataclasses.replace(spec, data=resolve_options(spec.dataset, spec.data))
        assert trial_hash(spec) == plan.trial_hash, command


def test_full_data_run_params_say_all_not_the_placeholder_ipc(tmp_path):
    """The full-data baseline is the cell with ipc null; its MLflow param and start tag say 'all'."""
    from distillery.orchestrator.sweep import run_params

    plans = expand(validate_config({**tiny_sweep("fullp"), "full_baseline": {"enabled": True}}, base_dir=tmp_path))
    full = [p for p in plans if p.full_data]
    assert full and all(run_params(p)["ipc"] == "all" and p.spec.ipc is None and p.tags()["distillery.ipc"] == "all" for p in full)
    assert {run_params(p)["ipc"] for p in plans if not p.full_data} == {"1", "2"}


def test_quickstart_has_enough_ipc_values_for_every_trade_off_curve(tmp_path):
    """The README's main job exists to show the trade-off curve: every registered curve model must fit."""
    from distillery.analysis.fits import CURVE_MODELS
    from tests.sweep_helpers import REPO

    config = load_config(REPO / "configs" / "quickstart.yaml", base_dir=tmp_path)
    assert len(set(config.ipcs)) >= max(m.min_levels for m in CURVE_MODELS.values())


def test_relative_method_paths_are_made_absolute_once_on_the_driver(tmp_path, monkeypatch):
    """A relative MTT buffer_dir means the driver's folder, not each Tune worker's own cwd."""
    from distillery.orchestrator.tune_config import validate_tune_config

    raw = {**tiny_sweep("paths"), "methods": {"mtt": {"params": {"iterations": 2, "buffer_dir": "experts"},
                                                      "per_ipc": {2: {"buffer_dir": "experts2"}}}}}
    plans = expand(validate_config(raw, base_dir=tmp_path))
    dirs = {p.spec.ipc: p.spec.method_params["buffer_dir"] for p in plans}
    assert dirs == {1: str(tmp_path / "experts"), 2: str(tmp_path / "experts2")}
    elsewhere = tmp_path / "trial-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # what Tune does to a worker: the resolved config does not move
    assert plans[0].spec.resolved_method_config().buffer_dir == str(tmp_path / "experts")
    tune = validate_tune_config({"name": "t", "datasets": ["digits"], "ipcs": [1], "methods": {"mtt": {
        "params": {"buffer_dir": "experts"}, "space": {"lr_img": {"type": "float", "low": 1, "high": 10}}}}}, base_dir=tmp_path)
    assert tune.methods["mtt"].params["buffer_dir"] == str(tmp_path / "experts")


def test_moving_data_or_caches_keeps_every_trial_hash(tmp_path):
    """Identity is what determines the result, not where files live; the locations stay in the params."""
    from distillery.orchestrator.sweep import run_params

    def plans(root: str, buffers: str):
        raw = {**tiny_sweep("moved"), "datasets": [{"name": "imagefolder", "root": root}],
               "methods": {"random": {}, "mtt": {"params": {"iterations": 2, "buffer_dir": buffers}}}, "ipcs": [1]}
        for split in ("train", "test"):
            for c in ("a", "b"):
                (tmp_path / root / split / c).mkdir(parents=True, exist_ok=True)
                for i in range(2):
                    (tmp_path / root / split / c / f"{i}.png").write_bytes(b"")
        return expand(validate_config(raw, base_dir=tmp_path))

    before, after = plans("data1", "cache1"), plans("data2", "cache2")
    assert [p.trial_hash for p in before] == [p.trial_hash for p in after]
    params = run_params(next(p for p in after if p.spec.method == "mtt"))
    assert params["data.root"] == str(tmp_path / "data2") and params["method_config.buffer_dir"] == str(tmp_path / "cache2")
    assert "root" not in str(sorted(k for k in params if k.startswith("data.") and k != "data.root"))


def test_every_protocol_and_loading_option_is_a_yaml_field(tmp_path):
    """The YAML models are generated from the core's dataclasses: each EvalConfig and DatasetOptions
    field can be set in a sweep (and reaches the trial), so a new core option needs no orchestrator edit."""
    import dataclasses
    import shlex

    from distillery.methods.data import DatasetOptions, resolve_options
    from distillery.methods.eval import EvalConfig
    from distillery.orchestrator.cli import build_parser
    from distillery.orchestrator.config import DATASET_RENAMES, DatasetEntry, EvalEntry
    from distillery.orchestrator.trial_cmd import spec_from_args

    assert {f.name for f in dataclasses.fields(EvalConfig)} <= set(EvalEntry.model_fields)
    loading = {DATASET_RENAMES.get(f.name, f.name) for f in dataclasses.fields(DatasetOptions)} - {"validation_per_class"}
    assert loading <= set(DatasetEntry.model_fields)

    raw = {**tiny_sweep("proto"), "eval": {"epochs": 2, "models": 2, "momentum": 0.5, "weight_decay": 0.0, "test_batch_size": 64}}
    raw["datasets"] = [{"name": "digits", "subset_seed": 3, "subset_per_class": 20, "cache_dir": "cache"}]
    plan = expand(validate_config(raw, base_dir=tmp_path))[0]
    assert (plan.spec.eval.momentum, plan.spec.eval.weight_decay, plan.spec.eval.test_batch_size) == (0.5, 0.0, 64)
    assert plan.spec.data.seed == 3 and plan.spec.data.cache_dir == str(tmp_path / "cache")
    default = expand(validate_config({**raw, "eval": {"epochs": 2, "models": 2}}, base_dir=tmp_path))[0]
    assert default.trial_hash != plan.trial_hash  # momentum and weight decay change the result
    spec = spec_from_args(build_parser().parse_args(shlex.split(plan.tags()["distillery.trial_command"])[1:]))
    assert trial_hash(dataclasses.replace(spec, data=resolve_options(spec.dataset, spec.data))) == plan.trial_hash


@pytest.mark.parametrize("change,expected", [
    ({"eval": {"momentum": 1.5}}, "eval.momentum: Input should be less than 1"),
    ({"eval": {"weight_decay": -1}}, "eval.weight_decay: Input should be greater than or equal to 0"),
    ({"eval": {"nesterov": True}}, "eval.nesterov: unknown field"),
    ({"datasets": [{"name": "digits", "seed": 1}]}, "datasets.0.seed: unknown field"),
    ({"datasets": [{"name": "digits", "validation_per_class": 5}]}, "datasets.0.validation_per_class: unknown field"),
])
def test_generated_fields_keep_their_bounds(tmp_path, change, expected):
    with pytest.raises(UserError, match=expected):
        validate_config({**tiny_sweep("bounds"), **change}, base_dir=tmp_path)


def test_a_new_method_option_reaches_every_surface_without_orchestrator_edits(tmp_path, monkeypatch):
    """Issue 11's promise: a method option, declared once in its config dataclass, is settable by
    `distillery trial --set`, a sweep YAML and a tuning range, and recorded in the MLflow params."""
    import dataclasses

    from distillery.methods.distill.base import METHODS
    from distillery.methods.distill.baselines import RandomReal
    from distillery.orchestrator.cli import build_parser
    from distillery.orchestrator.sweep import run_params
    from distillery.orchestrator.trial_cmd import spec_from_args
    from distillery.orchestrator.tune_config import validate_tune_config

    @dataclasses.dataclass(frozen=True)
    class NewcomerConfig:
        iterations: int = 3
        blend: float = 0.5

    class Newcomer(RandomReal):
        Config = NewcomerConfig

    monkeypatch.setitem(METHODS._items, "newcomer", Newcomer)
    spec = spec_from_args(build_parser().parse_args(["trial", "--method", "newcomer", "--set", "blend=0.25", "--no-estimate"]))
    assert spec.resolved_method_config().blend == 0.25
    plan = expand(validate_config({**tiny_sweep("new"), "methods": {"newcomer": {"params": {"blend": 0.75}}}}, base_dir=tmp_path))[0]
    assert plan.spec.resolved_method_config().blend == 0.75 and run_params(plan)["method_config.blend"] == "0.75"
    tune = validate_tune_config({"name": "t", "datasets": ["digits"], "ipcs": [1], "methods": {"newcomer": {
        "space": {"blend": {"type": "float", "low": 0.1, "high": 0.9}}}}}, base_dir=tmp_path)
    assert tune.methods["newcomer"].space["blend"].high == 0.9
    with pytest.raises(UserError, match=r"methods.newcomer.params: .*'blend' expects"):
        validate_config({**tiny_sweep("new"), "methods": {"newcomer": {"params": {"blend": "much"}}}}, base_dir=tmp_path)


def test_workers_use_the_drivers_resolution_of_a_trial(tmp_path, monkeypatch):
    """Resolved once on the driver: the typed method config travels with the pickled spec, so a worker
    whose environment differs (another $DISTILLERY_CACHE) reads the experts where the driver built them."""
    import pickle

    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "driver-cache"))
    raw = {**tiny_sweep("once"), "methods": {"mtt": {"params": {"iterations": 2}}}, "ipcs": [1]}
    plan = expand(validate_config(raw, base_dir=tmp_path))[0]
    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path / "worker-cache"))
    shipped = pickle.loads(pickle.dumps(plan))
    assert shipped.spec.resolved_method_config().buffer_dir == str(tmp_path / "driver-cache" / "experts")
    assert shipped.trial_hash == plan.trial_hash


def test_trial_set_accepts_the_sweep_spellings_of_its_fields():
    """One --set grammar: a dotted path copied from a sweep's eval or dataset section works for a trial."""
    from distillery.orchestrator.cli import build_parser
    from distillery.orchestrator.trial_cmd import spec_from_args

    argv = ["trial", "--no-estimate", "--set", "eval.arch_options.convnet.width=32", "--set", "data.subset_seed=4",
            "--set", "eval.momentum=0.5", "--set", "net.convnet.depth=2"]
    spec = spec_from_args(build_parser().parse_args(argv))
    assert dict(spec.arch_options["convnet"]) == {"width": 32, "depth": 2}
    assert spec.data.seed == 4 and spec.eval.momentum == 0.5
    with pytest.raises(UserError, match="eval has no option 'arch_option'"):
        spec_from_args(build_parser().parse_args(["trial", "--set", "eval.arch_option=1"]))


def test_trial_ipc_all_is_the_full_data_cell():
    from distillery.orchestrator.cli import build_parser
    from distillery.orchestrator.trial_cmd import spec_from_args

    parse = build_parser().parse_args
    assert spec_from_args(parse(["trial", "--method", "full", "--ipc", "all"])).full_data
    assert spec_from_args(parse(["trial", "--method", "full"])).ipc is None  # --ipc is ignored for the baseline
    with pytest.raises(UserError, match="the full-data baseline is the cell with ipc null .* use --method full"):
        spec_from_args(parse(["trial", "--method", "dm", "--ipc", "all"]))
    with pytest.raises(SystemExit) as exit_info:
        parse(["trial", "--ipc", "many"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("path", sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path, tmp_path):
    """A config in configs/ that no longer validates (a renamed option, a removed method) fails here,
    not in a user's first run. Tuning configs are the ones with ``objectives``."""
    from distillery.orchestrator.tune_config import load_tune_config

    raw = yaml.safe_load(path.read_text())
    loader = load_tune_config if "objectives" in raw else load_config
    loader(path, base_dir=tmp_path)

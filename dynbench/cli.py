"""The command line: ``python -m dynbench key=value ...`` through Hydra, with one-line errors."""
from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from dynbench.config import RootConfig
from dynbench.errors import DynbenchError, NotApplicable
from dynbench.method import import_methods

log = logging.getLogger("dynbench")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
FAILED = "FAILED"  # marker file a failed multirun job leaves in its output folder
GROUPS = ("method", "task", "model", "train", "logger", "experiment")

import_methods()  # registers every method's config schema before Hydra composes
# ``${eq:${seed},1}`` in a config: true for one value of another key (experiment=glue times seed 1 only)
OmegaConf.register_new_resolver("eq", lambda left, right: left == right, replace=True)


def validate(cfg: DictConfig) -> RootConfig:
    """Build the typed config; range checks run here, before any data or weights load."""
    try:
        config = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, ValueError) as err:
        cause = err.__cause__ or err
        raise DynbenchError(f"bad config: {str(cause).splitlines()[0]}") from None
    for task in config.method.task_knobs:  # a misspelt task would silently leave its task on the default grid
        check_choice("task", task, "method.task_knobs")
    return config


def check_choices(argv: list[str]) -> None:
    """Reject an unknown ``method=``/``task=``/... value in one line that lists the choices.

    Hydra would also refuse it, but over many lines and listing the schemas among the choices.
    """
    for arg in argv:
        group, sep, value = arg.lstrip("+").partition("=")
        if not sep or group not in GROUPS or any(c in value for c in "()$[]"):
            continue  # not a group choice, or sweep syntax that Hydra expands itself
        for v in value.split(","):
            check_choice(group, v)


def check_choice(group: str, value: str, key: Optional[str] = None) -> None:
    """One-line error for a ``value`` that is not one of the config group's files (``key``: what set it)."""
    choices = sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml"))
    if value not in choices:
        near = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise DynbenchError(f"{key + ': ' if key else ''}unknown {group} {value!r}{hint}; choose from: {', '.join(choices)}")


def load_config(*overrides: str) -> RootConfig:
    """The validated config for these overrides, composed as the command line would (for scripts and tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


class FailureSummary(Callback):
    """After a multirun, names the jobs that failed and exits non-zero; the other jobs' records stand."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED}"))
        if failed:
            for marker in failed:
                log.error("job %s failed: %s", marker.parent.name, marker.read_text().strip())
            sys.exit(f"error: {len(failed)} job(s) of the multirun failed (see above); the others finished")


def threads_per_job(launcher: DictConfig, cores: int) -> Optional[int]:
    """Torch threads for one job of a local parallel launcher, so that jobs together use the cores once
    (joblib's ``n_jobs``: -1 is one job per core, -2 all cores but one, ...); None where jobs do not share
    this machine's cores."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    jobs = int(launcher.get("n_jobs") or 1)
    jobs = cores + 1 + jobs if jobs < 0 else jobs
    return max(1, cores // max(1, jobs))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from dynbench.runner import run  # heavy imports after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        config = validate(cfg)
        if multirun and config.train.threads is None:
            config.train.threads = threads_per_job(hydra_cfg.launcher, len(os.sched_getaffinity(0)))
        run(config, output_dir)
    except DynbenchError as err:
        if not multirun:
            sys.exit(f"error: {err}")
        if isinstance(err, NotApplicable):  # a sweep's method x task pair that does not exist, not a failure
            log.warning("skipped: %s", err)
            return
        log.error("%s", err)
        (output_dir / FAILED).write_text(str(err))
    except Exception as err:  # a job's crash must not take the other jobs of a multirun down
        if not multirun:
            raise
        log.exception("job crashed")
        (output_dir / FAILED).write_text(f"{type(err).__name__}: {err}")


def composition_error(err: HydraException) -> str:
    """Hydra's error in one line; a key the config lacks comes with the nearest one it has."""
    cause = err.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(cause.parent_node, DictConfig):
        parent, _, key = cause.full_key.rpartition(".")
        near = difflib.get_close_matches(key, [str(k) for k in cause.parent_node.keys()], n=1)
        hint = f" (did you mean {parent + '.' if parent else ''}{near[0]}?)" if near else ""
        return f"bad config: no key {cause.full_key!r}{hint}"
    detail = f": {str(cause).splitlines()[0]}" if isinstance(cause, OmegaConfBaseException) else ""
    return f"bad config: {str(err).splitlines()[0]}{detail}"


def entry() -> None:
    """``python -m dynbench``: check group choices, then hand over to Hydra; its errors come back in one line."""
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user asked for Hydra's stack traces
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises what it would print over several lines
    try:
        check_choices(sys.argv[1:])
        main()
    except DynbenchError as err:
        sys.exit(f"error: {err}")
    except HydraException as err:
        if full_error:
            raise
        sys.exit(f"error: {composition_error(err)}")
